package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestWorkerFlags: a worker count below one is refused (it would
// otherwise be taken for the default) before anything starts, from the
// command line and from the environment.
func TestWorkerFlags(t *testing.T) {
	clearAuthEnv(t)
	for _, c := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"serve zero", "", []string{"serve", "--insecure", "--redis=redis://127.0.0.1:1/0", "--workers=0"}, "--workers 0: must be at least 1"},
		{"dev negative", "", []string{"dev", "--workers=-2"}, "--workers -2: must be at least 1"},
		{"environment", "0", []string{"serve", "--insecure", "--redis=redis://127.0.0.1:1/0"}, "--workers 0: must be at least 1"},
		{"not a number", "many", []string{"serve", "--insecure", "--redis=redis://127.0.0.1:1/0"}, `HUBFARM_WORKERS="many" is not an integer`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("HUBFARM_WORKERS", c.env)
			}
			var stdout, stderr bytes.Buffer
			code := run(c.args, &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), c.want) {
				t.Fatalf("exit %d, stderr %q; want a failure saying %q", code, stderr.String(), c.want)
			}
			if strings.Contains(stderr.String(), "127.0.0.1:1") {
				t.Fatalf("got as far as Redis: %q", stderr.String())
			}
		})
	}
}
