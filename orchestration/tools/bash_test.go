package tools

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }

// gone reports whether pid no longer runs (absent, or a zombie waiting for
// its reaper).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && (s[i+2] == 'Z' || s[i+2] == 'X')
}

// waitGone polls until every pid is gone or the deadline passes.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("process %d still runs", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func pidsOf(t *testing.T, out string) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(out) {
		n, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		pids = append(pids, n)
	}
	if len(pids) == 0 {
		t.Fatalf("no pids in %q", out)
	}
	return pids
}

func bashExec(t *testing.T, mut func(*Config)) (*Executor, string) {
	t.Helper()
	if _, err := os.Stat(DefaultShell); err != nil {
		t.Skip("no /bin/bash")
	}
	return newExec(t, func(c *Config) {
		c.EnableBash = true
		if mut != nil {
			mut(c)
		}
	})
}

func TestBashDisabled(t *testing.T) {
	e, _ := newExec(t, nil)
	for _, name := range []string{"bash", "bash_command"} {
		wantFail(t, run(t, e, name, map[string]any{"command": "echo hi"}), "disabled")
	}
	for _, d := range e.Definitions() {
		if d.Name == ToolBash {
			t.Fatal("bash is advertised while disabled")
		}
	}
}

func TestBashHappyPath(t *testing.T) {
	e, root := bashExec(t, nil)
	t.Setenv("HUBFARM_TEST_SECRET", "s3cret")
	r := run(t, e, "bash", map[string]any{"command": "echo hi; echo warn >&2; echo \"[$HUBFARM_TEST_SECRET]\"; pwd"})
	wantOK(t, r)
	real, _ := filepath.EvalSymlinks(filepath.Join(root, "s1"))
	if r.Output != "hi\n[]\n"+real+"\n" {
		t.Fatalf("output %q", r.Output)
	}
	m := r.Metadata
	if m["exit_code"] != 0 || m["stderr"] != "warn\n" || m["shell"] != "/bin/bash" || m["working_directory"] != "." || m["timed_out"] != false {
		t.Fatalf("metadata %v", m)
	}
	// working_directory, relative to the session directory.
	r = run(t, e, "bash_command", map[string]any{"command": "pwd", "working_directory": "src"})
	wantOK(t, r)
	if r.Output != filepath.Join(real, "src")+"\n" || r.Metadata["working_directory"] != "src" {
		t.Fatalf("output %q %v", r.Output, r.Metadata)
	}
	wantFail(t, run(t, e, "bash", map[string]any{"command": "pwd", "working_directory": "../"}), "escapes")
	// stderr is the output when stdout is empty.
	r = run(t, e, "bash", map[string]any{"command": "echo only-err >&2"})
	wantOK(t, r)
	if r.Output != "only-err\n" {
		t.Fatalf("output %q", r.Output)
	}
}

func TestBashFailure(t *testing.T) {
	e, _ := bashExec(t, nil)
	r := run(t, e, "bash", map[string]any{"command": "echo partial; echo boom >&2; exit 3"})
	wantFail(t, r, "exited with code 3: boom")
	if r.Metadata["exit_code"] != 3 || r.Output != "partial\n" {
		t.Fatalf("%q %v", r.Output, r.Metadata)
	}
	wantFail(t, run(t, e, "bash", map[string]any{}), "command is required")
}

func TestBashBlockedCommands(t *testing.T) {
	e, _ := bashExec(t, nil)
	for _, c := range []string{"rm -rf /", "RM   -RF   /home", "sudo rm x", "echo x && shutdown now", "format c:", "init 0"} {
		wantFail(t, run(t, e, "bash", map[string]any{"command": c}), "blocked command")
	}
	if err := CheckCommand("ls -la"); err != nil {
		t.Fatal(err)
	}
}

func TestBashTimeoutKillsTree(t *testing.T) {
	e, _ := bashExec(t, nil)
	start := time.Now()
	// Two grandchildren: one in the background, one in a subshell.
	r := run(t, e, "bash", map[string]any{"command": "sleep 100 & echo $!; (sleep 100; true) & echo $!; sleep 100",
		"timeout_seconds": "1"})
	wantFail(t, r, "timed out after 1s")
	if r.Metadata["timed_out"] != true {
		t.Fatalf("metadata %v", r.Metadata)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v", d)
	}
	waitGone(t, pidsOf(t, r.Output))
}

func TestBashBackgroundChildKilledAfterExit(t *testing.T) {
	e, _ := bashExec(t, nil)
	start := time.Now()
	// The child keeps stdout open after the shell exits.
	r := run(t, e, "bash", map[string]any{"command": "sleep 100 & echo $!"})
	wantOK(t, r)
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v", d)
	}
	waitGone(t, pidsOf(t, r.Output))
}

func TestBashCancellation(t *testing.T) {
	e, root := bashExec(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The command writes its pid into a file; cancel once it is there.
	done := make(chan struct{})
	var out string
	var errS string
	go func() {
		defer close(done)
		r := e.Execute(ctx, Call{ToolName: "bash", WorkingDirectory: "s1",
			Parameters: map[string]any{"command": "sleep 100 & echo $! > pid; wait"}})
		out, errS = r.Output, r.Error
	}()
	pidFile := filepath.Join(root, "s1", "pid")
	deadline := time.Now().Add(10 * time.Second)
	var pid int
	for {
		b, _ := os.ReadFile(pidFile)
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			pid = n
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("command did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return after cancel")
	}
	if !strings.Contains(errS, "cancelled") {
		t.Fatalf("error %q (output %q)", errS, out)
	}
	waitGone(t, []int{pid})
}

func TestBashOutputCap(t *testing.T) {
	e, _ := bashExec(t, func(c *Config) { c.MaxOutputBytes = 1000 })
	r := run(t, e, "bash", map[string]any{"command": "head -c 5000 /dev/zero | tr '\\0' a; head -c 3000 /dev/zero | tr '\\0' b >&2"})
	wantOK(t, r)
	if !strings.HasPrefix(r.Output, strings.Repeat("a", 1000)+"\n[output truncated: 4000 more bytes]") {
		t.Fatalf("output %q…", r.Output[:min(len(r.Output), 80)])
	}
	if r.Metadata["stdout_truncated"] != true || r.Metadata["stderr_truncated"] != true {
		t.Fatalf("metadata %v", r.Metadata)
	}
	if s := r.Metadata["stderr"].(string); !strings.HasSuffix(s, "[output truncated: 2000 more bytes]") {
		t.Fatalf("stderr %q", s[len(s)-60:])
	}
}

func TestBashTimeoutParameter(t *testing.T) {
	e, _ := bashExec(t, func(c *Config) { c.MaxBashTimeout = 2 * time.Second })
	// 1000 s is clamped to the maximum.
	r := run(t, e, "bash", map[string]any{"command": "true", "timeout_seconds": 1000.0})
	wantOK(t, r)
	if r.Metadata["timeout_seconds"] != 2 {
		t.Fatalf("metadata %v", r.Metadata)
	}
	wantFail(t, run(t, e, "bash", map[string]any{"command": "true", "timeout_seconds": 1.5}), "integer")
}
