// Package e2e holds egressd's end-to-end tests: the real egressd binary, a fake internet
// (package testnet) and real clients (curl, Python's urllib, pip) talking through it. The
// tests without network namespaces use loopback addresses for every role: fake public
// servers on 127.0.0.2 (inside --public-cidrs 127.0.0.0/26), answers that must be refused on
// 127.0.0.100, egressd itself on 127.0.0.1.
package e2e
