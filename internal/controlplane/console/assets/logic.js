// What the console works out from the API's answers, without the DOM: denied hosts grouped,
// the grant that would let one through, the policy change that would, decisions per minute.

/** The policy fields of DESIGN §2.1: what a write sends (a stored policy has more). */
export const POLICY_FIELDS = [
  "allow_package_managers",
  "allow_http",
  "allow_https",
  "allowed_domains",
  "allowed_cidrs",
  "denied_domains",
  "allowed_tcp",
  "mode",
  "http_rules",
];

/** A stored policy reduced to its fields, copied, with lists present. */
export function policyFields(p) {
  const out = {};
  for (const k of POLICY_FIELDS) {
    const v = p?.[k];
    if (v === undefined || v === null) continue;
    out[k] = Array.isArray(v) ? v.map((x) => (typeof x === "object" ? { ...x } : x)) : v;
  }
  for (const k of ["allowed_domains", "allowed_cidrs", "denied_domains", "allowed_tcp", "http_rules"]) out[k] ??= [];
  out.allow_package_managers ??= false;
  out.allow_http ??= false;
  out.allow_https ??= false;
  out.mode ??= "enforce";
  return out;
}

const WEB_PORTS = new Set([80, 443]);

/** Whether a record is a denial: a deny, or a would-be deny in monitor mode. */
export function isDenial(e) {
  return e.kind !== "close" && (e.decision === "deny" || e.would_deny === true);
}

/** The destination of a record, as one key: "host:port", "host" (DNS), or the address. */
export function targetOf(e) {
  const host = e.host || "";
  if (e.kind === "dns") return { key: `dns ${host}`, host, port: undefined, ip: "", dns: true };
  if (host) return { key: e.port ? `${host}:${e.port}` : host, host, port: e.port, ip: e.ip || "", dns: false };
  return { key: e.port ? `${e.ip}:${e.port}` : e.ip || "?", host: "", port: e.port, ip: e.ip || "", dns: false };
}

/**
 * The denials of a session grouped by destination, newest first: each with its count, the
 * layer and reason of its latest denial, and whether a later decision allowed it (a grant or a
 * policy change since).
 */
export function groupDenials(events) {
  const groups = new Map();
  const sorted = [...events].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
  for (const e of sorted) {
    if (e.kind === "close") continue;
    const t = targetOf(e);
    let g = groups.get(t.key);
    if (isDenial(e)) {
      if (!g) {
        g = { ...t, count: 0, first: e.time, allowedSince: undefined };
        groups.set(t.key, g);
      }
      g.count++;
      g.last = e.time;
      g.lastSeq = e.seq;
      g.layer = e.layer || "";
      g.reason = e.reason || "";
      g.rule = e.rule || "";
      g.message = e.message || "";
      g.vm_id = e.vm_id;
      g.session_id = e.session_id;
      g.would = e.decision !== "deny";
      g.allowedSince = undefined;
    } else if (g && e.decision === "allow") {
      g.allowedSince = e.time;
      g.allowedRule = e.rule || "";
    }
  }
  return [...groups.values()].sort((a, b) => (b.lastSeq ?? 0) - (a.lastSeq ?? 0));
}

/** Reasons a grant (which adds names, endpoints or ranges) can lift. */
const GRANTABLE = new Set(["host_not_allowed", "name_not_allowed", "port_not_allowed", "ip_literal", "not_public"]);

/** The layer a change for a denial goes on: the one that denied; the default's becomes the session's. */
export function scopeFor(group) {
  if (group.layer === "vm") return { scope: "vm", id: group.vm_id };
  if (group.layer === "session" || group.layer === "default") return { scope: "session", id: group.session_id };
  return undefined;
}

function cidrOf(ip) {
  return ip.includes(":") ? `${ip}/128` : `${ip}/32`;
}

/**
 * The grant that lets a denied destination through, on the layer that denied it:
 * `{scope, id, body}`, or `{why}` when a grant cannot (a flag is off, a hard denial, ...).
 */
export function grantFor(group, minutes) {
  const where = scopeFor(group);
  if (!where) return { why: "a hard denial: no policy or grant lifts it" };
  if (!where.id) return { why: `the record names no ${where.scope}` };
  if (!GRANTABLE.has(group.reason)) {
    const flag = { https_off: "allow_https", http_off: "allow_http" }[group.reason];
    if (flag) return { why: `${flag} is off on that layer, and a grant never turns a flag on: add to policy instead` };
    if (group.reason === "denied_domain") return { why: "the host is in denied_domains, which a grant cannot override" };
    return { why: `a grant cannot lift ${group.reason || "this denial"}` };
  }
  const body = { ttl_seconds: Math.round(minutes * 60), note: `console: ${group.key}` };
  if (group.host && (group.dns || group.port === undefined || WEB_PORTS.has(group.port))) body.domains = [group.host];
  else if (group.host) body.tcp = [`${group.host}:${group.port}`];
  else if (group.ip) body.cidrs = [cidrOf(group.ip)];
  else return { why: "the record names no host or address" };
  return { ...where, body };
}

function hostMatches(pattern, host) {
  if (pattern === host) return true;
  return pattern.startsWith("*.") && host.endsWith(pattern.slice(1));
}

function addTo(list, value) {
  return list.includes(value) ? list : [...list, value];
}

/**
 * The change to a layer's policy that lets a denied destination through: `{policy, changes}`
 * (changes in words, for the confirmation), or `{why}`. base is that layer's policy (for the
 * default layer, the default policy, which becomes the session's own).
 */
export function policyAddition(base, group) {
  if (!scopeFor(group)) return { why: "a hard denial: no policy lifts it" };
  const p = policyFields(base);
  const changes = [];
  const host = group.host;
  const webFlag = group.port === 80 ? "allow_http" : "allow_https";
  const addDomain = () => {
    // An empty allowed_domains means "any public host": adding one name would narrow the
    // policy for every other host, so a name is added only to a list that is in use, or to
    // an empty one when no web traffic is allowed at all (nothing to narrow).
    if (p.allowed_domains.length > 0 || (!p.allow_http && !p.allow_https)) {
      if (!p.allowed_domains.some((d) => hostMatches(d, host))) {
        p.allowed_domains = addTo(p.allowed_domains, host);
        changes.push(`allowed_domains + ${host}`);
      }
    }
  };
  switch (group.reason) {
    case "host_not_allowed":
    case "name_not_allowed":
      if (!host) return { why: "the record names no host" };
      addDomain();
      break;
    case "https_off":
    case "http_off": {
      const flag = group.reason === "https_off" ? "allow_https" : "allow_http";
      if (host) addDomain();
      p[flag] = true;
      changes.push(`${flag}: true`);
      break;
    }
    case "port_not_allowed":
      if (!host || !group.port) return { why: "the record names no host and port" };
      if (WEB_PORTS.has(group.port)) {
        addDomain();
        if (!p[webFlag]) {
          p[webFlag] = true;
          changes.push(`${webFlag}: true`);
        }
      } else if (!p.allowed_tcp.includes(`${host}:${group.port}`)) {
        p.allowed_tcp = addTo(p.allowed_tcp, `${host}:${group.port}`);
        changes.push(`allowed_tcp + ${host}:${group.port}`);
      }
      break;
    case "ip_literal":
    case "not_public":
      if (!group.ip) return { why: "the record names no address" };
      if (!p.allowed_cidrs.includes(cidrOf(group.ip))) {
        p.allowed_cidrs = addTo(p.allowed_cidrs, cidrOf(group.ip));
        changes.push(`allowed_cidrs + ${cidrOf(group.ip)}`);
      }
      break;
    case "denied_domain": {
      const keep = p.denied_domains.filter((d) => !hostMatches(d, host));
      for (const d of p.denied_domains) if (!keep.includes(d)) changes.push(`denied_domains − ${d}`);
      p.denied_domains = keep;
      break;
    }
    default:
      return { why: `no policy field lifts ${group.reason || "this denial"}` };
  }
  if (changes.length === 0) return { why: "that layer's policy allows it already (another layer denied it, or it changed since)" };
  return { policy: p, changes };
}

/**
 * Decisions per minute over the last `minutes` minutes up to now: [{start, allow, deny}],
 * oldest first. Would-be denials count as denied; closed connections are not decisions.
 */
export function perMinute(events, minutes, now = Date.now()) {
  const end = Math.floor(now / 60_000) * 60_000 + 60_000;
  const start = end - minutes * 60_000;
  const buckets = Array.from({ length: minutes }, (_, i) => ({ start: start + i * 60_000, allow: 0, deny: 0 }));
  for (const e of events) {
    if (e.kind === "close") continue;
    const t = new Date(e.time).getTime();
    if (!(t >= start && t < end)) continue;
    const b = buckets[Math.floor((t - start) / 60_000)];
    if (isDenial(e)) b.deny++;
    else b.allow++;
  }
  return buckets;
}

/** Whether a record passes the console's filters (the server filters VM, session and decision too). */
export function matches(e, f) {
  if (f.vm_id && e.vm_id !== f.vm_id) return false;
  if (f.session_id && e.session_id !== f.session_id) return false;
  if (f.decision === "deny" && !isDenial(e)) return false;
  if (f.decision === "allow" && (e.decision !== "allow" || e.would_deny)) return false;
  if (f.host) {
    const needle = f.host.toLowerCase();
    if (!(e.host || "").toLowerCase().includes(needle) && !(e.ip || "").includes(needle)) return false;
  }
  return true;
}
