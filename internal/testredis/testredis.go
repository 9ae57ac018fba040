// Package testredis gives tests a Redis to talk to: a real redis-server
// process per test (with Stop, Restart and Kill for fault tests), and
// Backends, which runs a test body against both a real redis-server and
// miniredis so code is checked against the real thing and against the
// embedded server the dev farm uses.
//
// Every server is private to the test that started it (own port, own
// temporary directory, no persistence), so tests stay isolated without key
// prefixes and may run in parallel.
package testredis

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// SkipEnv names the environment variable that turns a missing redis-server
// binary from a test failure into a skip. Set it to "1" only where
// installing redis-server is impossible: the real-server half of Backends
// then does not run.
const SkipEnv = "HUBFARM_TEST_SKIP_REAL_REDIS"

// Binary is the redis-server executable looked up on PATH.
const Binary = "redis-server"

// startTimeout bounds how long a redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// stopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
const stopTimeout = 5 * time.Second

// Server is a redis-server process owned by one test. Its address never
// changes, across Restart too, so clients created before a Stop reconnect
// to the restarted server by themselves. All methods are safe for
// concurrent use.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	// extra are more redis-server arguments (cluster mode, replicaof).
	extra []string
	// conf, if set, is a sentinel configuration file: the process is a
	// sentinel (redis-server CONF --sentinel) instead of a server.
	conf     string
	sentinel bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has been reaped
}

// Start starts a redis-server on a free loopback port with persistence off
// and its own temporary directory, waits until it answers PING, and stops it
// when the test ends. A missing binary fails the test with an install hint,
// or skips it when SkipEnv is "1".
func Start(t testing.TB) *Server {
	t.Helper()
	return startServer(t, nil)
}

// startServer is Start with more redis-server arguments; extra is called
// with the chosen port and its result appended (nil: none).
func startServer(t testing.TB, extra func(port int) []string) *Server {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv(SkipEnv) == "1" {
			t.Skipf("testredis: %s not found and %s=1: skipping the real-Redis test", Binary, SkipEnv)
		}
		t.Fatalf("testredis: %s not found on PATH: install redis-server (apt-get install -y redis-server), or set %s=1 to skip real-Redis tests", Binary, SkipEnv)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	// A port picked by the kernel can be taken by someone else before
	// redis-server binds it: retry with a fresh port.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testredis: pick a port: %v", err)
		}
		s.port = port
		if extra != nil {
			s.extra = extra(port)
		}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.cleanup)
			return s
		}
	}
	t.Fatalf("testredis: start %s: %v", Binary, lastErr)
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's redis:// URL, as accepted by redis.ParseURL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// NewClient returns a client of the server, closed when the test ends
// (closing it earlier is fine). The close is registered with t.Cleanup when
// the client is created, so it runs before cleanups registered earlier
// (such as a goroutine-leak check made at the start of the test).
func (s *Server) NewClient() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop ends the server with SIGTERM and waits until the process is gone
// (SIGKILL after a few seconds). Stopping a stopped server does nothing.
// Nothing is persisted: a Restart comes back empty.
func (s *Server) Stop() {
	s.signal(syscall.SIGTERM, stopTimeout)
}

// Kill ends the server with SIGKILL, the way a crash does, and waits until
// the process is gone.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL, stopTimeout)
}

// Restart starts the server again on the same port (stopping it first if it
// still runs) and waits until it answers PING. The data set starts empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	// The port was ours a moment ago; redis-server binds with SO_REUSEADDR,
	// but give a racing process a few chances to let go of it.
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.start(); err == nil {
			return
		}
	}
	s.t.Fatalf("testredis: restart %s on port %d: %v", Binary, s.port, err)
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	logPath := filepath.Join(s.dir, "redis.log")
	var cmd *exec.Cmd
	if s.conf != "" {
		// A sentinel: it reads (and rewrites) its configuration file.
		if s.sentinel {
			cmd = exec.Command(s.bin, s.conf)
		} else {
			cmd = exec.Command(s.bin, s.conf, "--sentinel")
		}
	} else {
		args := []string{
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", s.dir,
			"--logfile", logPath,
			"--daemonize", "no",
			"--protected-mode", "no",
		}
		cmd = exec.Command(s.bin, append(args, s.extra...)...)
	}
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := waitPing(s.Addr(), exited, startTimeout); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; log: %s", err, tail(logPath))
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

func (s *Server) signal(sig syscall.Signal, wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(wait):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

func (s *Server) cleanup() {
	s.Kill() // nothing to save: the quickest clean end
}

// waitPing polls addr with a raw PING until it answers PONG, the process
// exits, or the timeout passes.
func waitPing(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = ping(addr); lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG from %s within %v: %w", addr, timeout, lastErr)
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited before answering PING", Binary)
		case <-tick.C:
		}
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("unexpected PING reply %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// Backend is one Redis implementation a Backends subtest runs against.
type Backend struct {
	// Name is "redis-server", "miniredis" or "redis-cluster"; it is also the
	// subtest name.
	Name string
	// Server is the real redis-server for fault tests (Stop, Restart, Kill,
	// CLIENT KILL); nil for miniredis and the cluster.
	Server *Server
	// Mini is the miniredis instance; nil for the others.
	Mini *miniredis.Miniredis
	// Cluster is the three-master Redis Cluster; nil for the others.
	Cluster *Cluster

	t testing.TB
}

// NewClient returns a new client of the backend (a ClusterClient for the
// cluster), closed when the test ends (closing it earlier is fine).
func (b Backend) NewClient() redis.UniversalClient {
	if b.Server != nil {
		return b.Server.NewClient()
	}
	if b.Cluster != nil {
		return b.Cluster.NewClient()
	}
	c := redis.NewClient(&redis.Options{Addr: b.Mini.Addr()})
	if b.t != nil {
		b.t.Cleanup(func() { _ = c.Close() })
	}
	return c
}

// Real reports whether the backend is a single real redis-server.
func (b Backend) Real() bool { return b.Server != nil }

// Clustered reports whether the backend is the Redis Cluster.
func (b Backend) Clustered() bool { return b.Cluster != nil }

// Option adds a backend to Backends.
type Option func(*backendsOpts)

type backendsOpts struct{ cluster bool }

// WithCluster makes Backends also run the body against a fresh three-master
// Redis Cluster (subtest "redis-cluster"; see StartCluster), for code that
// must work on every topology the farm supports.
func WithCluster() Option { return func(o *backendsOpts) { o.cluster = true } }

// Backends runs fn as subtests, named "redis-server" and "miniredis" (and
// "redis-cluster" WithCluster), each with a fresh server of its own. The
// redis-server half follows Start's rules for a missing binary, the cluster
// StartCluster's.
func Backends(t *testing.T, fn func(t *testing.T, b Backend), opts ...Option) {
	t.Helper()
	var o backendsOpts
	for _, opt := range opts {
		opt(&o)
	}
	t.Run("redis-server", func(t *testing.T) {
		fn(t, Backend{Name: "redis-server", Server: Start(t), t: t})
	})
	t.Run("miniredis", func(t *testing.T) {
		fn(t, Backend{Name: "miniredis", Mini: miniredis.RunT(t), t: t})
	})
	if o.cluster {
		t.Run("redis-cluster", func(t *testing.T) {
			fn(t, Backend{Name: "redis-cluster", Cluster: StartCluster(t), t: t})
		})
	}
}
