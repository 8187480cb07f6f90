package dnsfilter

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dataplane/events"
	"github.com/egressd/egressd/internal/dataplane/resolve"
	"github.com/egressd/egressd/policy"
)

// Rules of the DNS filter's own refusals.
const (
	ruleOpcode      = "only standard queries (opcode QUERY) are answered"
	ruleQuestions   = "a query must have exactly one question"
	ruleEDNSVersion = "only EDNS version 0 is supported"
	ruleClass       = "only class IN is answered"
	ruleNoSet       = "no policy is in force for this sandbox"
	ruleBusy        = "the gateway forwards a bounded number of queries at once; ask again"
)

// maxEDEText bounds the extra text of an Extended DNS Error, so that a refusal fits in 512
// bytes whatever a rule says.
const maxEDEText = 200

// ServeDNS answers one query (dns.Handler): it identifies the sandbox by the source
// address, judges the question with the sandbox's policy, refuses it or forwards it and
// filters the answer, writes the answer and sends one record to the Sink.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	src, transport := peer(w)
	m, rec, asker := s.handleQuery(req, src, transport)
	size := dns.MaxMsgSize
	if transport == policy.UDP {
		size = udpSize(req)
	}
	m.Truncate(size)
	if asker != nil {
		// After truncation: the hook is told the addresses the sandbox actually gets.
		m = s.open(req, m, asker, &rec)
	}
	_ = w.WriteMsg(m) // a client that went away needs no answer
	s.sink().Record(rec)
}

// peer returns the client's address (unmapped, without zone) and the transport.
func peer(w dns.ResponseWriter) (netip.Addr, policy.Transport) {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap().WithZone(""), policy.UDP
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap().WithZone(""), policy.TCP
	case nil:
		return netip.Addr{}, policy.UDP
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		t := policy.TCP
		if strings.HasPrefix(a.Network(), "udp") {
			t = policy.UDP
		}
		return ap.Addr().Unmap().WithZone(""), t
	}
}

// udpSize is the largest answer the client can take over UDP: 512 bytes, or the size its
// OPT record advertises, capped at maxUDPSize.
func udpSize(req *dns.Msg) int {
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, min(int(opt.UDPSize()), maxUDPSize))
	}
	return size
}

// handle decides one query and builds its answer (not yet truncated) and its record,
// without telling TCP of the answer.
func (s *Server) handle(req *dns.Msg, src netip.Addr, transport policy.Transport) (*dns.Msg, events.Record) {
	m, rec, _ := s.handleQuery(req, src, transport)
	return m, rec
}

// handleQuery is handle, and also says who asked when the answer is an upstream answer to
// an allowed question (nil otherwise): its addresses are for TCP to open (open).
func (s *Server) handleQuery(req *dns.Msg, src netip.Addr, transport policy.Transport) (*dns.Msg, events.Record, *asker) {
	s.init()
	rec := events.Record{Transport: string(transport)}
	if len(req.Question) > 0 {
		rec.Host = strings.TrimSuffix(req.Question[0].Name, ".")
		rec.QType = policy.QTypeString(req.Question[0].Qtype)
	}
	var (
		tenant, vmID string
		set          *policy.Effective
		known        bool
	)
	if s.VMs != nil && src.IsValid() {
		tenant, vmID, set, known = s.VMs.VMByAddr(src)
	}
	if !known {
		rule := "no sandbox has the source address " + src.String()
		return refuse(req, dns.RcodeRefused, dns.ExtendedErrorCodeProhibited, policy.Refused(policy.ReasonUnknownSandbox, rule), &rec), rec, nil
	}
	rec.Tenant, rec.VMID = tenant, vmID
	switch opt := req.IsEdns0(); {
	case req.Opcode != dns.OpcodeQuery:
		return refuse(req, dns.RcodeNotImplemented, dns.ExtendedErrorCodeNotSupported, policy.Refused(policy.ReasonMalformedQuery, ruleOpcode), &rec), rec, nil
	case len(req.Question) != 1:
		return refuse(req, dns.RcodeFormatError, dns.ExtendedErrorCodeOther, policy.Refused(policy.ReasonMalformedQuery, ruleQuestions), &rec), rec, nil
	case opt != nil && opt.Version() != 0:
		return refuse(req, dns.RcodeBadVers, dns.ExtendedErrorCodeOther, policy.Refused(policy.ReasonMalformedQuery, ruleEDNSVersion), &rec), rec, nil
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return refuse(req, dns.RcodeRefused, dns.ExtendedErrorCodeNotSupported, policy.Refused(policy.ReasonQueryClass, ruleClass), &rec), rec, nil
	}
	if set == nil {
		d := policy.Decision{Reason: policy.ReasonNoPolicy, Rule: ruleNoSet, Layer: policy.LayerDefault, Mode: policy.Enforce}
		return refuse(req, dns.RcodeRefused, dns.ExtendedErrorCodeBlocked, d, &rec), rec, nil
	}
	name, err := policy.NormalizeName(q.Name)
	var d policy.Decision
	if err != nil && (q.Qtype == policy.QTypeA || q.Qtype == policy.QTypeAAAA) {
		d = policy.Refused(policy.ReasonBadName, "not a valid host name: "+err.Error())
	} else {
		// For another type the name does not matter: DecideQuery refuses the type first.
		d = set.DecideQuery(policy.Query{Name: name, Type: q.Qtype})
	}
	if err == nil {
		rec.Host = name
	}
	if !d.Allow || name == "" {
		return refuse(req, dns.RcodeRefused, dns.ExtendedErrorCodeBlocked, d, &rec), rec, nil
	}
	decided(&rec, d)
	m, answered := s.resolve(req, name, set, &rec)
	if !answered {
		return m, rec, nil
	}
	return m, rec, &asker{src: src, tenant: tenant, vmID: vmID, name: name}
}

// resolve forwards an allowed question upstream and builds the filtered answer; answered
// says it is the upstream's answer, filtered, rather than a failure.
func (s *Server) resolve(req *dns.Msg, name string, set *policy.Effective, rec *events.Record) (m *dns.Msg, answered bool) {
	q := req.Question[0]
	qname := dns.Fqdn(name)
	resp, err := s.forward(qname, q.Qtype)
	if errors.Is(err, errBusy) {
		return refuse(req, dns.RcodeServerFailure, dns.ExtendedErrorCodeOther, policy.Refused(policy.ReasonBusy, ruleBusy), rec), false
	}
	var rcodeErr *resolve.RcodeError
	switch {
	case errors.As(err, &rcodeErr):
		// REFUSED (and anything else) from upstream would read as a policy refusal: a
		// sandbox sees REFUSED only when egressd's policy refused.
		m := reply(req, dns.RcodeServerFailure)
		addEDE(m, dns.ExtendedErrorCodeOther, "egressd: the upstream resolver answered "+dns.RcodeToString[rcodeErr.Rcode])
		return m, false
	case err != nil:
		s.warn("dnsfilter: upstream failed", "err", err)
		m := reply(req, dns.RcodeServerFailure)
		addEDE(m, dns.ExtendedErrorCodeNetworkError, "egressd: the upstream resolver did not answer")
		return m, false
	}
	m = reply(req, resp.Rcode)
	ans := filterAnswer(resp, qname, q.Qtype, set, s.maxTTL)
	for _, rr := range ans.records {
		if h := rr.Header(); strings.EqualFold(h.Name, qname) {
			h.Name = q.Name // the client's spelling (0x20 case randomisation)
		}
	}
	m.Answer = ans.records
	if ans.stripped > 0 {
		addEDE(m, dns.ExtendedErrorCodeFiltered, "egressd: addresses removed: not public and not in allowed_cidrs, or always denied")
	}
	if ans.first.IsValid() {
		rec.IP = ans.first.String()
	}
	return m, true
}

// decided fills a record with a decision: the fields of the query the handler set (tenant,
// VM, transport, the name and type asked) stay, the rest comes from events.Decided, the one
// builder of decision records.
func decided(rec *events.Record, d policy.Decision) {
	r := events.Decided(events.KindDNS, events.Source{Tenant: rec.Tenant, VMID: rec.VMID}, policy.Conn{Transport: policy.Transport(rec.Transport), Host: rec.Host}, d)
	r.QType, r.IP = rec.QType, rec.IP
	*rec = r
}

// refuse answers rcode, with an Extended DNS Error saying why when the client sent EDNS,
// and records the denial.
func refuse(req *dns.Msg, rcode int, ede uint16, d policy.Decision, rec *events.Record) *dns.Msg {
	d.Allow, d.WouldDeny = false, false
	decided(rec, d)
	m := reply(req, rcode)
	addEDE(m, ede, "egressd: "+string(d.Reason)+": "+events.Refusal(d))
	return m
}

// reply starts the answer to req: its ID and question (the client's spelling), RA set, and
// an OPT record when the client sent one (RFC 6891: never otherwise). Nothing else of the
// client's message is echoed, EDNS options included.
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode) // echoes the first question only
	m.RecursionAvailable = true
	if req.IsEdns0() != nil {
		m.SetEdns0(maxUDPSize, false)
	} else if rcode > 0xF {
		m.Rcode = dns.RcodeFormatError // an extended RCODE needs an OPT record
	}
	return m
}

// addEDE adds an Extended DNS Error (RFC 8914) to m's OPT record, if it has one.
func addEDE(m *dns.Msg, code uint16, text string) {
	opt := m.IsEdns0()
	if opt == nil {
		return
	}
	if len(text) > maxEDEText {
		text = strings.ToValidUTF8(text[:maxEDEText], "")
	}
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "?")
	}
	opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
}

func (s *Server) sink() events.Sink {
	if s.Sink == nil {
		return events.Discard
	}
	return s.Sink
}
