// Package pgtest gives tests a fresh PostgreSQL database of their own on the server named by
// $EGRESSD_TEST_POSTGRES (default DefaultURL), so that tests can run in parallel, never see
// each other's rows or notifications, and leave nothing behind.
//
// When the server cannot be reached the test is skipped with the reason, except under
// CI=true, where it fails: CI must not go green by skipping the PostgreSQL side (DESIGN §10).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable with the server's URL. Its database is used only to
// create and drop the tests' databases, so the user needs CREATEDB.
const EnvURL = "EGRESSD_TEST_POSTGRES"

// DefaultURL is the server a developer machine (and CI) is expected to run.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Prefix starts the name of every database this package creates.
const Prefix = "egressd_test_"

// ServerURL is the URL of the test server.
func ServerURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// Require skips t (fails it under CI=true) unless the test server answers: for a test that
// creates many databases, so that a missing server is reported once.
func Require(t testing.TB) {
	t.Helper()
	_, admin := connectServer(t)
	admin.Close(context.Background())
}

// connectServer connects to the test server, skipping or failing t when it cannot.
func connectServer(t testing.TB) (*url.URL, *pgx.Conn) {
	t.Helper()
	server := ServerURL()
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("pgtest: $%s must be a postgres:// URL, got %q", EnvURL, server)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		msg := fmt.Sprintf("pgtest: no PostgreSQL at %s (set $%s): %v", u.Redacted(), EnvURL, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return u, admin
}

// NewDatabase creates an empty database for t and returns its URL; the database is dropped
// when t ends (connections to it included).
func NewDatabase(t testing.TB) string {
	t.Helper()
	u, admin := connectServer(t)
	defer admin.Close(context.Background())
	server := u.String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	name := Prefix + randomHex(8)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() { drop(t, server, name) })
	u.Path = "/" + name
	return u.String()
}

// drop removes a test's database, ending the connections that a failed test may have left.
func drop(t testing.TB, server, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
		return
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
