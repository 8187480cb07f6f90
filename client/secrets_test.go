package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

const secretAnswer = `{"name":"openai","domains":["api.openai.test"],"placeholder":"egressd-secret-openai-aaaaaaaaaaaaaaaaaaaaaaaa","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:06Z"}`

func TestSecretRequests(t *testing.T) {
	ctx := context.Background()
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/v1/secrets" && r.Method == http.MethodGet:
			answerJSON(http.StatusOK, `{"secrets":[`+secretAnswer+`]}`)(w, r)
		default:
			answerJSON(http.StatusOK, secretAnswer)(w, r)
		}
	})
	c := mustNew(t, f.URL, "k")

	s, err := c.CreateSecret(ctx, CreateSecretRequest{Name: "openai", Value: "sk-1", Domains: []string{"api.openai.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.last(t); got.method != "POST" || got.path != "/v1/secrets" ||
		got.body != `{"name":"openai","value":"sk-1","domains":["api.openai.test"]}` {
		t.Errorf("create sent %s %s %s", got.method, got.path, got.body)
	}
	if s.Placeholder != "egressd-secret-openai-aaaaaaaaaaaaaaaaaaaaaaaa" || !slices.Equal(s.Domains, []string{"api.openai.test"}) {
		t.Errorf("decoded %+v", s)
	}

	list, err := c.ListSecrets(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "openai" {
		t.Errorf("list = %+v, %v", list, err)
	}
	if _, err := c.GetSecret(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	if got := f.last(t); got.method != "GET" || got.rawPath != "/v1/secrets/a%2Fb" {
		t.Errorf("get sent %s %s", got.method, got.rawPath)
	}
	if _, err := c.RotateSecret(ctx, "openai", "sk-2"); err != nil {
		t.Fatal(err)
	}
	if got := f.last(t); got.method != "PUT" || got.path != "/v1/secrets/openai" || got.body != `{"value":"sk-2"}` {
		t.Errorf("rotate sent %s %s %s", got.method, got.path, got.body)
	}
	if _, err := c.UpdateSecret(ctx, "openai", UpdateSecretRequest{Domains: []string{"*.openai.test"}}); err != nil {
		t.Fatal(err)
	}
	if got := f.last(t); got.body != `{"domains":["*.openai.test"]}` {
		t.Errorf("update sent %s", got.body)
	}
	if err := c.DeleteSecret(ctx, "openai"); err != nil {
		t.Fatal(err)
	}
	if got := f.last(t); got.method != "DELETE" || got.path != "/v1/secrets/openai" {
		t.Errorf("delete sent %s %s", got.method, got.path)
	}
	for _, bad := range []string{"", ".", ".."} {
		if err := c.DeleteSecret(ctx, bad); err == nil {
			t.Errorf("DeleteSecret(%q) was sent", bad)
		}
	}

	// With WithWaitFleet the writes ask for wait=fleet.
	cf := mustNew(t, f.URL, "k", WithWaitFleet())
	cf.CreateSecret(ctx, CreateSecretRequest{Name: "n", Value: "v", Domains: []string{"a.test"}})
	if got := f.last(t); got.query != "wait=fleet" {
		t.Errorf("create with WithWaitFleet: query %q", got.query)
	}
	cf.RotateSecret(ctx, "n", "w")
	if got := f.last(t); got.query != "wait=fleet" {
		t.Errorf("rotate with WithWaitFleet: query %q", got.query)
	}
}

// TestSecretValueIsNotPrinted: a request printed by accident shows no value.
func TestSecretValueIsNotPrinted(t *testing.T) {
	v := SecretValue("sk-do-not-print")
	req := CreateSecretRequest{Name: "n", Value: v, Domains: []string{"a.test"}}
	up := UpdateSecretRequest{Value: &v}
	out := fmt.Sprintf("%v %+v %#v %s %q %x %v %+v", req, req, req, v, v, v, up, *up.Value)
	if strings.Contains(out, "sk-do-not-print") || strings.Contains(out, fmt.Sprintf("%x", "sk-do-not-print")) {
		t.Errorf("printed: %s", out)
	}
}

func TestCAPEM(t *testing.T) {
	const pemText = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/ca.pem" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		io.WriteString(w, pemText)
	})
	got, err := mustNew(t, f.URL, "").CAPEM(context.Background())
	if err != nil || string(got) != pemText {
		t.Fatalf("CAPEM = %q, %v", got, err)
	}
	if h := f.last(t).header; h.Get("Authorization") != "" || h.Get("X-API-Key") != "" {
		t.Error("CAPEM sent a key; the certificate is public")
	}
	f503 := newFakeAPI(t, answerJSON(http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"no CA"}}`))
	if _, err := mustNew(t, f503.URL, "").CAPEM(context.Background()); ErrorCode(err) != CodeUnavailable {
		t.Errorf("a 503: %v", err)
	}
}
