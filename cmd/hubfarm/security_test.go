package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestratorchat/hubfarm/hubnode/auth"
)

// clearAuthEnv keeps the machine's HUBFARM_* settings out of a test.
func clearAuthEnv(t *testing.T) {
	for _, name := range []string{"jwt-secret", "jwt-previous-secret", "jwt-public-key", "jwks-file", "jwt-issuer",
		"jwt-audience", "insecure", "dev-trust-user-param", "redis", "log-format", "log-level", "sub", "role", "ttl"} {
		if _, ok := os.LookupEnv(envName(name)); ok {
			t.Setenv(envName(name), "")
			os.Unsetenv(envName(name))
		}
	}
}

// TestServeRefusesInsecureStarts: serve does not start without a key
// unless --insecure, does not mix JWTs with the trusted user parameter,
// and reports a bad key file; all before it dials Redis (the address here
// has nothing listening).
func TestServeRefusesInsecureStarts(t *testing.T) {
	clearAuthEnv(t)
	noRedis := "--redis=redis://127.0.0.1:1/0"
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no key", []string{noRedis}, "refusing to start without authentication"},
		{"previous secret only", []string{noRedis, "--jwt-previous-secret=old"}, "previous HS256 secrets need a current one"},
		{"trusted user param with JWT", []string{noRedis, "--jwt-secret=s", "--dev-trust-user-param"}, "cannot be combined"},
		{"missing key file", []string{noRedis, "--jwt-public-key=" + filepath.Join(t.TempDir(), "none.pem")}, "public key"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"serve"}, c.args...), &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and %q", c.name, code, stderr.String(), c.want)
		}
		if strings.Contains(stderr.String(), "redis") && !strings.Contains(c.want, "redis") {
			t.Errorf("%s: got as far as Redis: %q", c.name, stderr.String())
		}
	}
}

// TestTokenCommand: `hubfarm token` mints a token that a farm with the
// same secret, issuer and audience accepts, with the roles asked for.
func TestTokenCommand(t *testing.T) {
	clearAuthEnv(t)
	var stdout, stderr bytes.Buffer
	code := run([]string{"token", "--jwt-secret", "s3cret", "--sub", "alice", "--role", "admin", "--ttl", "5m",
		"--jwt-issuer", "https://id.example", "--jwt-audience", "hubfarm"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("token: exit %d: %s", code, stderr.String())
	}
	v, err := auth.New(auth.Config{HS256Secret: []byte("s3cret"), Issuer: "https://id.example", Audience: "hubfarm"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(stdout.String()))
	if err != nil || c.Subject != "alice" || !c.IsAdmin() {
		t.Fatalf("minted token: %+v %v", c, err)
	}
	other, _ := auth.New(auth.Config{HS256Secret: []byte("other")})
	if _, err := other.Verify(strings.TrimSpace(stdout.String())); err == nil {
		t.Fatal("the token verified with another secret")
	}
	for _, args := range [][]string{{"token", "--sub", "alice"}, {"token", "--jwt-secret", "s"}, {"token", "--jwt-secret", "s", "--sub", "a", "--ttl", "-1m"}} {
		stdout.Reset()
		stderr.Reset()
		if code := run(args, &stdout, &stderr); code == 0 || stdout.Len() > 0 {
			t.Errorf("%v: exit %d, printed %q", args, code, stdout.String())
		}
	}
}

// TestLogFormats: serve logs JSON and dev text by default; the level flag
// filters; a bad level or format is refused.
func TestLogFormats(t *testing.T) {
	clearAuthEnv(t)
	for cmd, want := range map[string]string{"serve": `"json"`, "dev": `"text"`} {
		var stdout, stderr bytes.Buffer
		run([]string{cmd, "-h"}, &stdout, &stderr)
		_, after, _ := strings.Cut(stderr.String(), "-log-format")
		line, _, _ := strings.Cut(after, "\n  -")
		if !strings.Contains(line, "(default "+want+")") {
			t.Errorf("%s: --log-format help %q, want default %s", cmd, line, want)
		}
	}
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "conn", "c1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "shown" || line["level"] != "WARN" || line["conn"] != "c1" {
		t.Fatalf("json logger at warn wrote %q (%v)", buf.String(), err)
	}
	buf.Reset()
	log, _ = newLogger(&buf, "text", "debug")
	log.Debug("detail")
	if !strings.Contains(buf.String(), "level=DEBUG msg=detail") {
		t.Fatalf("text logger at debug wrote %q", buf.String())
	}
	if _, err := newLogger(&buf, "json", "loud"); err == nil {
		t.Error("level loud accepted")
	}
	if _, err := newLogger(&buf, "xml", "info"); err == nil {
		t.Error("format xml accepted")
	}
}
