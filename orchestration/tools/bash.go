package tools

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// BlockedCommands returns the commands the bash tool refuses (CONTRACT
// §8.3), lower case. A command is refused when, lower-cased and with runs of
// white space collapsed, it contains one of them anywhere — deliberately
// coarse: "rm -rf /tmp/x" is refused too.
func BlockedCommands() []string {
	return []string{"rm -rf /", "rmdir /s", "format ", "del /f /s /q", "shutdown", "reboot",
		"halt", "init 0", "init 6", "sudo rm", "sudo rmdir", "sudo format"}
}

// CheckCommand returns an error wrapping ErrBlockedCommand when command
// contains a blocked command.
func CheckCommand(command string) error {
	norm := strings.ToLower(strings.Join(strings.Fields(command), " "))
	for _, b := range BlockedCommands() {
		if strings.Contains(norm, b) {
			return fmt.Errorf("%w: it contains the blocked command %q", ErrBlockedCommand, strings.TrimSpace(b))
		}
	}
	return nil
}

// capWriter keeps the first max bytes written to it and counts the rest.
// Each stream has its own (exec writes each from one goroutine).
type capWriter struct {
	max     int
	buf     []byte
	dropped int64
}

func (w *capWriter) Write(p []byte) (int, error) {
	room := w.max - len(w.buf)
	if room >= len(p) {
		w.buf = append(w.buf, p...)
	} else {
		if room > 0 {
			w.buf = append(w.buf, p[:room]...)
		}
		w.dropped += int64(len(p) - max(room, 0))
	}
	return len(p), nil // never fail: the command must not get EPIPE from us
}

func (w *capWriter) String() string {
	s := strings.ToValidUTF8(string(w.buf), "\uFFFD")
	if w.dropped > 0 {
		s += fmt.Sprintf("\n[output truncated: %d more bytes]", w.dropped)
	}
	return s
}

// killGroup kills every process in the process group pgid.
func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func (e *Executor) bash(ctx context.Context, s *session, p params) (string, contract.Map, error) {
	command, err := p.required("command", "cmd")
	if err != nil {
		return "", nil, err
	}
	if err := CheckCommand(command); err != nil {
		return "", nil, err
	}
	dir := s.real
	if wd, ok, err := p.str("working_directory", "cwd", "workdir"); err != nil {
		return "", nil, err
	} else if ok && wd != "" {
		if dir, err = e.sb.confine(s.real, wd, "working directory"); err != nil {
			return "", nil, err
		}
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() {
			return "", nil, fmt.Errorf("working_directory %q is not an existing directory", wd)
		}
	}
	relDir, _ := filepath.Rel(s.real, dir)
	secs, err := p.integer(0, "timeout_seconds", "timeout")
	if err != nil {
		return "", nil, err
	}
	timeout := e.cfg.DefaultBashTimeout
	if secs != 0 {
		timeout = min(max(time.Duration(secs)*time.Second, time.Second), e.cfg.MaxBashTimeout)
	}

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, e.cfg.Shell, "-c", command)
	cmd.Dir = dir
	cmd.Env = e.cfg.bashEnv(dir)
	// Its own process group, so that a timeout kills everything the
	// command started (pipelines, background jobs, subshells), not only
	// the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	// A background child may keep stdout open after the shell exits; Wait
	// then gives up on the pipes after this delay instead of blocking until
	// the child ends.
	cmd.WaitDelay = 500 * time.Millisecond
	stdout := &capWriter{max: e.cfg.MaxOutputBytes}
	stderr := &capWriter{max: e.cfg.MaxOutputBytes}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", e.cfg.Shell, err)
	}
	waitErr := cmd.Wait()
	// Whatever the command left running in its group is killed too: a tool
	// call must not leave processes behind in the sandbox. The group id
	// cannot have been reused yet in practice: pids are allocated
	// cyclically over a large range.
	_ = killGroup(cmd.Process.Pid)

	exitCode := -1
	if cmd.ProcessState != nil {
		exitCode = cmd.ProcessState.ExitCode()
	}
	timedOut := errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	outS, errS := stdout.String(), stderr.String()
	meta := contract.Map{
		"exit_code":         exitCode,
		"stdout":            outS,
		"stderr":            errS,
		"working_directory": displayPath(relDir),
		"shell":             e.cfg.Shell,
		"command":           command,
		"timed_out":         timedOut,
		"timeout_seconds":   int(timeout / time.Second),
		"stdout_truncated":  stdout.dropped > 0,
		"stderr_truncated":  stderr.dropped > 0,
	}
	output := outS
	if strings.TrimSpace(output) == "" {
		output = errS
	}
	switch {
	case timedOut:
		return output, meta, fmt.Errorf("command timed out after %s; its process group was killed", timeout)
	case ctx.Err() != nil:
		return output, meta, fmt.Errorf("command cancelled; its process group was killed: %w", ctx.Err())
	case exitCode != 0:
		msg := fmt.Sprintf("command exited with code %d", exitCode)
		if t := tail(errS, 500); t != "" {
			msg += ": " + t
		}
		return output, meta, errors.New(msg)
	case waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay):
		return output, meta, fmt.Errorf("command: %w", waitErr)
	}
	return output, meta, nil
}

// tail returns the last n bytes of s (trimmed), starting at a line when
// possible.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return "…" + strings.ToValidUTF8(s, "")
}
