package policy

// MonitorOnly reports whether every layer of s is in monitor mode: then nothing of s
// denies (hard denials aside), and the transparent gateway's kernel forwards everything
// else, logging what would have been denied. False with no layer (which denies
// everything) or a nil Matcher.
func (s *Effective) MonitorOnly() bool {
	if len(s.layers) == 0 {
		return false
	}
	for _, l := range s.layers {
		if l.Matcher == nil || !l.Matcher.monitor {
			return false
		}
	}
	return true
}
