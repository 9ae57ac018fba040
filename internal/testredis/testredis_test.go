package testredis

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	rdb := s.NewClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	opt, err := redis.ParseURL(s.URL())
	if err != nil || opt.Addr != s.Addr() {
		t.Fatalf("URL %q: %v, %+v", s.URL(), err, opt)
	}

	down := func() error { // a quick PING: no client retries against a dead server
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	s.Stop()
	s.Stop() // idempotent
	if err := down(); err == nil {
		t.Fatal("PING answered by a stopped server")
	}

	s.Restart()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	if n, _ := rdb.Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("data survived a restart; persistence should be off")
	}

	s.Kill()
	if err := down(); err == nil {
		t.Fatal("PING answered by a killed server")
	}
	s.Restart()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping after kill and restart: %v", err)
	}
}

func TestServersAreIsolated(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	ctx := context.Background()
	if err := a.NewClient().Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.NewClient().Exists(ctx, "k").Result(); n != 0 {
		t.Fatal("key visible on the other server")
	}
}

func TestBackends(t *testing.T) {
	var mu sync.Mutex
	var names []string
	Backends(t, func(t *testing.T, b Backend) {
		mu.Lock()
		names = append(names, b.Name)
		mu.Unlock()
		if b.Real() != (b.Server != nil) || (b.Server == nil) == (b.Mini == nil) {
			t.Fatalf("backend %q: server %v mini %v", b.Name, b.Server, b.Mini)
		}
		rdb := b.NewClient()
		ctx := context.Background()
		if err := rdb.Publish(ctx, "ch", "x").Err(); err != nil {
			t.Fatalf("%s: publish: %v", b.Name, err)
		}
		if err := rdb.SAdd(ctx, "s", "1").Err(); err != nil {
			t.Fatalf("%s: sadd: %v", b.Name, err)
		}
	})
	if strings.Join(names, ",") != "redis-server,miniredis" {
		t.Fatalf("ran %v", names)
	}
}

// fakeTB records Fatalf/Skipf instead of ending the real test.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runFake(t *testing.T) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f)
	}()
	<-done
	return f
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(SkipEnv, "")
	f := runFake(t)
	if !strings.Contains(f.fatal, "apt-get install -y redis-server") || f.skip != "" {
		t.Fatalf("fatal %q skip %q", f.fatal, f.skip)
	}
	t.Setenv(SkipEnv, "1")
	f = runFake(t)
	if f.skip == "" || f.fatal != "" {
		t.Fatalf("fatal %q skip %q", f.fatal, f.skip)
	}
}
