package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/egressd/egressd/client"
	"github.com/egressd/egressd/policy"
)

// A sandbox for an AI agent: HTTPS to one API and the package registries, nothing else.
func Example() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8470", os.Getenv("EGRESSD_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}

	vm, err := c.CreateVM(ctx, client.CreateVMRequest{})
	if err != nil {
		log.Fatal(err)
	}
	sess, err := c.CreateSession(ctx, client.CreateSessionRequest{VMID: vm.VMID})
	if err != nil {
		log.Fatal(err)
	}
	stored, err := c.SetSessionPolicy(ctx, sess.SessionID, policy.Policy{
		AllowHTTPS:           true,
		AllowPackageManagers: true,
		AllowedDomains:       []string{"api.openai.com"},
	})
	if err != nil {
		log.Fatal(err) // e.g. "allowed_domains[0]: ... (400 invalid_policy)"
	}
	for _, w := range stored.Warnings {
		log.Printf("policy warning: %s", w)
	}

	// Run the sandbox with HTTP_PROXY and HTTPS_PROXY set to this URL.
	fmt.Println("proxy:", sess.ProxyURL)

	res, err := c.Check(ctx, sess.SessionID, client.CheckRequest{URL: "https://pypi.org/simple/"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (layer %s, reason %s)\n", res.Decision, res.Layer, res.Reason)
}

// A session without a policy of its own runs under its VM's policy, or the default.
func ExampleIsPolicyNotSet() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8470", os.Getenv("EGRESSD_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.GetSessionPolicy(ctx, "ses_0123")
	switch {
	case client.IsPolicyNotSet(err):
		fmt.Println("no session policy; the VM's policy or the default applies")
	case client.IsNotFound(err):
		fmt.Println("no such session")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("revision", p.Revision)
	}
}

// ssh and git to a code host, and a database under a wildcard, from every session of a VM;
// then ask what the gateway would decide for one of them.
func ExampleClient_Check_allowedTCP() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8470", os.Getenv("EGRESSD_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.SetVMPolicy(ctx, "vm-1", policy.Policy{
		AllowedTCP: []string{"github.com:22", "*.db.example.com:5432"},
	}); err != nil {
		log.Fatal(err) // e.g. "allowed_tcp[0]: ... (400 invalid_policy)"
	}
	res, err := c.Check(ctx, "ses_0123", client.CheckRequest{Host: "github.com", Port: 22, Resolve: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (reason %s, rule %s)\n", res.Decision, res.Reason, res.Rule)
	for _, a := range res.Addresses {
		fmt.Printf("  %s: %s (%s)\n", a.IP, a.Decision, a.Reason)
	}
}
