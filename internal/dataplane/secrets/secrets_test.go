package secrets

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/controlplane/keyring"
	"github.com/egressd/egressd/internal/controlplane/store"
	"github.com/egressd/egressd/internal/controlplane/store/sqlite"
)

func newKeyring(t *testing.T) *keyring.Keyring {
	t.Helper()
	key, err := keyring.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := keyring.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type fixture struct {
	t    *testing.T
	st   *sqlite.Store
	keys *keyring.Keyring
}

func newFixture(t *testing.T) *fixture {
	st, err := sqlite.Open(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fixture{t: t, st: st, keys: newKeyring(t)}
}

// create stores a secret as the API does: its value sealed for its tenant, name and
// placeholder.
func (f *fixture) create(tenant, name, value string, domains ...string) store.Secret {
	f.t.Helper()
	ph := "egressd-secret-" + name + "-" + strings.Repeat("a", 24) + tenant
	sealed, err := f.keys.Seal([]byte(value), keyring.SecretAD(tenant, name, ph))
	if err != nil {
		f.t.Fatal(err)
	}
	se, err := f.st.CreateSecret(f.t.Context(), store.Secret{Tenant: tenant, Name: name, Domains: domains, Placeholder: ph, Sealed: sealed})
	if err != nil {
		f.t.Fatal(err)
	}
	return se
}

func (f *fixture) rotate(tenant, name, value string) store.Secret {
	f.t.Helper()
	se, err := f.st.UpdateSecret(f.t.Context(), tenant, name, func(se store.Secret) (store.Secret, error) {
		var err error
		se.Sealed, err = f.keys.Seal([]byte(value), keyring.SecretAD(se.Tenant, se.Name, se.Placeholder))
		return se, err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return se
}

func (f *fixture) start(logs *bytes.Buffer) *Book {
	f.t.Helper()
	cfg := Config{Poll: time.Hour} // only kicks and waits move it, so the test sees each step
	if logs != nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	b := New(f.st, f.keys, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	if err := b.Start(ctx); err != nil {
		f.t.Fatal(err)
	}
	return b
}

func wait(t *testing.T, b *Book, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
}

func values(list []*Secret) []string {
	var out []string
	for _, se := range list {
		out = append(out, se.Name+"="+string(se.Value))
	}
	return out
}

func TestBookFollowsTheStore(t *testing.T) {
	f := newFixture(t)
	f.create("acme", "openai", "sk-one", "api.openai.test")
	b := f.start(nil)
	if got := values(b.Tenant("acme").For("api.openai.test")); !slices.Equal(got, []string{"openai=sk-one"}) {
		t.Fatalf("after load: %v", got)
	}
	if b.Tenant("other").Len() != 0 || b.Tenant("other").For("api.openai.test") != nil {
		t.Error("another tenant sees acme's secret")
	}

	// A rotation applies once the book has the write's revision.
	se := f.rotate("acme", "openai", "sk-two")
	wait(t, b, se.Revision)
	if got := values(b.Tenant("acme").For("api.openai.test")); !slices.Equal(got, []string{"openai=sk-two"}) {
		t.Errorf("after rotation: %v", got)
	}
	if b.Tenant("acme").ByPlaceholder(se.Placeholder).Name != "openai" {
		t.Error("ByPlaceholder does not find it")
	}

	// New secrets, in two tenants; then a deletion.
	f.create("acme", "gh", "ghp-1", "*.github.test")
	se = f.create("beta", "gh", "ghp-beta", "*.github.test")
	wait(t, b, se.Revision)
	if got := values(b.Tenant("beta").For("api.github.test")); !slices.Equal(got, []string{"gh=ghp-beta"}) {
		t.Errorf("beta: %v", got)
	}
	if got := values(b.Tenant("acme").All()); !slices.Equal(got, []string{"gh=ghp-1", "openai=sk-two"}) {
		t.Errorf("acme: %v", got)
	}
	if err := f.st.DeleteSecret(t.Context(), "acme", "openai"); err != nil {
		t.Fatal(err)
	}
	rev, _ := f.st.Revision(t.Context())
	wait(t, b, rev)
	if got := values(b.Tenant("acme").All()); !slices.Equal(got, []string{"gh=ghp-1"}) {
		t.Errorf("after delete: %v", got)
	}
	if err := f.st.DeleteSecret(t.Context(), "beta", "gh"); err != nil {
		t.Fatal(err)
	}
	rev, _ = f.st.Revision(t.Context())
	wait(t, b, rev)
	if b.Tenant("beta").Len() != 0 {
		t.Error("beta's last secret is still there")
	}
}

func TestSetMatching(t *testing.T) {
	s := newSet([]*Secret{
		{Name: "a", Placeholder: "pa", Domains: []string{"api.example.test"}},
		{Name: "b", Placeholder: "pb", Domains: []string{"*.example.test"}},
		{Name: "c", Placeholder: "pc", Domains: []string{"*.deep.example.test", "api.example.test"}},
	})
	for host, want := range map[string][]string{
		"api.example.test":        {"a", "b", "c"},
		"example.test":            nil, // a wildcard never matches its own base
		"x.example.test":          {"b"},
		"x.deep.example.test":     {"b", "c"},
		"deep.example.test":       {"b"},
		"api.example.test.evil":   nil,
		"evilapi.example.test":    {"b"},
		"notexample.test":         nil,
		"a.b.c.deep.example.test": {"b", "c"},
	} {
		var got []string
		for _, se := range s.For(host) {
			got = append(got, se.Name)
			if !se.Matches(host) {
				t.Errorf("%s: For lists %s, whose Matches says no", host, se.Name)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("For(%s) = %v, want %v", host, got, want)
		}
		if s.Intercepts(host) != (len(want) > 0) {
			t.Errorf("Intercepts(%s) = %v", host, s.Intercepts(host))
		}
	}
	var empty *Set
	if empty.For("a.test") != nil || empty.ByPlaceholder("x") != nil || empty.Len() != 0 {
		t.Error("the nil Set is not empty")
	}
}

// TestValuesNeverPrinted: a secret in a log line, an error or fmt output shows its name, not
// its value.
func TestValuesNeverPrinted(t *testing.T) {
	const value = "sk-very-secret-value"
	se := &Secret{Tenant: "acme", Name: "openai", Placeholder: "ph", Domains: []string{"a.test"}, Value: []byte(value)}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("applied", "secret", se)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("applied", "secret", se)
	out := fmt.Sprintf("%v %+v %#v %s %q", se, se, se, se, se) + fmt.Errorf("wrapped: %v", se).Error() + logs.String()
	if strings.Contains(out, value) {
		t.Errorf("the value was printed: %s", out)
	}
	if !strings.Contains(logs.String(), "openai") {
		t.Errorf("the log does not name the secret: %s", logs.String())
	}
}

// TestWrongKey: a secret sealed under another key is kept, with its error and no value, and
// the log names it without any value.
func TestWrongKey(t *testing.T) {
	f := newFixture(t)
	f.create("acme", "good", "v-good", "a.test")
	other := newFixture(t)
	other.st = f.st // same store, another key
	other.create("acme", "bad", "v-bad", "a.test")
	var logs bytes.Buffer
	b := f.start(&logs)
	set := b.Tenant("acme")
	bad := set.ByPlaceholder(set.All()[0].Placeholder)
	if bad.Name != "bad" || bad.Value != nil || bad.Err == nil {
		t.Errorf("bad = %v value %q err %v", bad, bad.Value, bad.Err)
	}
	if got := values(set.For("a.test")); !slices.Equal(got, []string{"bad=", "good=v-good"}) {
		t.Errorf("For = %v", got)
	}
	if !strings.Contains(logs.String(), `"name":"bad"`) || strings.Contains(logs.String(), "v-bad") {
		t.Errorf("log: %s", logs.String())
	}
}

// TestConcurrentReaders: the data path reads while syncs publish. Run with -race.
func TestConcurrentReaders(t *testing.T) {
	f := newFixture(t)
	f.create("acme", "s", "v0", "*.example.test")
	b := f.start(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, se := range b.Tenant("acme").For("api.example.test") {
					if !strings.HasPrefix(string(se.Value), "v") {
						t.Errorf("value %q", se.Value)
						return
					}
				}
			}
		})
	}
	var last store.Secret
	for i := range 20 {
		last = f.rotate("acme", "s", fmt.Sprint("v", i+1))
		b.Kick()
	}
	wait(t, b, last.Revision)
	close(stop)
	wg.Wait()
	if got := values(b.Tenant("acme").All()); !slices.Equal(got, []string{"s=v20"}) {
		t.Errorf("after 20 rotations: %v", got)
	}
}

func BenchmarkFor(b *testing.B) {
	var list []*Secret
	for i := range 100 {
		list = append(list, &Secret{Name: fmt.Sprint("s", i), Placeholder: fmt.Sprint("p", i), Domains: []string{fmt.Sprintf("api%d.example.test", i)}})
	}
	list = append(list, &Secret{Name: "w", Placeholder: "pw", Domains: []string{"*.example.test"}})
	s := newSet(list)
	for b.Loop() {
		if len(s.For("api7.example.test")) != 2 {
			b.Fatal("no match")
		}
	}
}

// A tenant without secrets is asked on every intercepted request: the answer must cost no
// allocation, and still behave as an empty set.
func TestTenantWithoutSecretsAllocatesNothing(t *testing.T) {
	b := New(nil, nil, Config{})
	if s := b.Tenant("nobody"); s == nil || s.Len() != 0 || s.For("api.example.test") != nil || s.ByPlaceholder("p") != nil {
		t.Fatalf("empty tenant: %+v", s)
	}
	if n := testing.AllocsPerRun(100, func() { _ = b.Tenant("nobody") }); n != 0 {
		t.Errorf("Tenant of a secretless tenant: %v allocs, want 0", n)
	}
}
