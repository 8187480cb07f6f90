package main

import (
	"strings"
	"testing"
)

func TestRoleFlag(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil || cfg.role != roleAll {
		t.Fatalf("default role = %q, %v; want all", cfg.role, err)
	}
	t.Setenv("EGRESSD_ROLE", "gateway")
	if cfg, err = parseFlags(nil); err != nil || cfg.role != roleGateway {
		t.Errorf("EGRESSD_ROLE=gateway: role %q, %v", cfg.role, err)
	}
	if cfg, err = parseFlags([]string{"--role", "api"}); err != nil || cfg.role != roleAPI {
		t.Errorf("--role api over EGRESSD_ROLE: role %q, %v; the flag must win", cfg.role, err)
	}
	if _, err = parseFlags([]string{"--role", "proxy"}); err == nil || !strings.Contains(err.Error(), "all, api or gateway") {
		t.Errorf("--role proxy: %v, want an error that lists the roles", err)
	}
}

func TestCheckRole(t *testing.T) {
	const pg = "postgres://db/egressd"
	for _, tc := range []struct {
		args []string
		want string // "" for accepted
	}{
		{[]string{}, ""},
		{[]string{"--transparent"}, ""},
		{[]string{"--store", pg, "--role", "api"}, ""},
		{[]string{"--store", pg, "--role", "gateway", "--transparent"}, ""},
		{[]string{"--store", pg, "--role", "api", "--transparent"}, "--role api does not"},
		{[]string{"--role", "gateway"}, "PostgreSQL --store"},
		{[]string{"--role", "api"}, "PostgreSQL --store"},
	} {
		cfg, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		err = checkRole(cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v, want it accepted", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: %v, want an error about %q", tc.args, err, tc.want)
		}
	}
}

func TestServes(t *testing.T) {
	for _, tc := range []struct {
		r            role
		api, gateway bool
	}{
		{roleAll, true, true},
		{roleAPI, true, false},
		{roleGateway, false, true},
	} {
		if tc.r.servesAPI() != tc.api || tc.r.servesGateway() != tc.gateway {
			t.Errorf("%s: servesAPI %v servesGateway %v, want %v %v", tc.r, tc.r.servesAPI(), tc.r.servesGateway(), tc.api, tc.gateway)
		}
	}
}

func TestRolesOfAConfig(t *testing.T) {
	const pg = "postgres://db/egressd"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "api,gateway"},
		{[]string{"--transparent"}, "api,gateway,transparent"},
		{[]string{"--store", pg, "--role", "api"}, "api"},
		{[]string{"--store", pg, "--role", "gateway"}, "gateway"},
		{[]string{"--store", pg, "--role", "gateway", "--transparent"}, "gateway,transparent"},
	} {
		cfg, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := strings.Join(cfg.roles(), ","); got != tc.want {
			t.Errorf("%v: roles %s, want %s", tc.args, got, tc.want)
		}
	}
}
