// Package e2e holds egressd's end-to-end tests: the real egressd binary, a fake internet
// (package testnet) and real clients (curl, Python's urllib, pip) talking through it. The
// tests without network namespaces use loopback addresses for every role: fake public
// servers on 127.0.0.2 (inside --public-cidrs 127.0.0.0/26), answers that must be refused on
// 127.0.0.100, egressd itself on 127.0.0.1.
//
// The namespace lab (gwlab_test.go) runs egressd in a gateway namespace in front of a fake
// internet namespace, with DESIGN §10's addresses. The allowed_tcp lab (tcplab_test.go) adds
// services that are not web: a fake SSH server, a real OpenSSH sshd serving a git
// repository, a fake PostgreSQL server and a byte source, reached with OpenSSH's ssh, git,
// psql and curl through the HTTP proxy's CONNECT, the SOCKS5 listener and the transparent
// gateway's kernel sets.
//
// The evasion suite of the kernel fast path (evasion_test.go, TestFastPathEvasion*) sends
// hand-made packets from inside a sandbox with raw sockets (rawflow_test.go): overlapping,
// out-of-order and retransmitted segments that disagree, the checksum trick, data on the
// SYN, IP fragments, urgent data, hellos cut at every byte of the name. A recorder in the
// fake internet keeps every byte each connection delivers; each case must reach it with
// nothing of the denied hello, once through the transparent proxy and once with
// --fast-path. TestFastPathEvasionServerView sends the same packets straight to a recorder
// to show that a server does read the denied name from them.
package e2e
