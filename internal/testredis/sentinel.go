package testredis

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelBinary is Debian's sentinel program (package redis-sentinel). It
// is the redis-server program under another name, so without it the
// sentinels run as redis-server --sentinel.
const SentinelBinary = "redis-sentinel"

// Failover timing of StartSentinel: a master silent for DownAfter is down,
// and a failover is retried after FailoverTimeout.
const (
	DownAfter       = time.Second
	FailoverTimeout = 3 * time.Second
)

// SentinelSet is a master, one replica and one or three sentinels
// monitoring them, owned by one test.
type SentinelSet struct {
	t testing.TB
	// MasterName is the name the sentinels know the master by.
	MasterName string
	// Master and Replica are the data servers as started; after a failover
	// the replica is the master.
	Master, Replica *Server
	// Sentinels are the sentinel processes.
	Sentinels []*Server
}

// StartSentinel starts a master, a replica of it and n sentinels (quorum
// n/2+1) with DownAfter and FailoverTimeout, and waits until the replica is
// in sync and every sentinel knows the replica (and, with several, the
// other sentinels). Everything is killed when the test ends. Without
// redis-server on PATH the test is skipped with a message saying what to
// install.
func StartSentinel(t testing.TB, n int) *SentinelSet {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Skipf("testredis: %s not found on PATH: the Sentinel tests need it (apt-get install -y redis-server redis-sentinel)", Binary)
	}
	bin, isSentinel := SentinelBinary, true
	if p, err := exec.LookPath(SentinelBinary); err == nil {
		bin = p
	} else {
		// Same program: redis-server runs as a sentinel with --sentinel.
		bin, _ = exec.LookPath(Binary)
		isSentinel = false
	}
	ss := &SentinelSet{t: t, MasterName: "hfmaster"}
	ss.Master = Start(t)
	master := ss.Master
	ss.Replica = startServer(t, func(int) []string {
		return []string{"--replicaof", "127.0.0.1", fmt.Sprint(master.port)}
	})
	quorum := n/2 + 1
	for i := range n {
		s := &Server{t: t, bin: bin, dir: t.TempDir(), sentinel: isSentinel}
		var lastErr error
		for attempt := 0; attempt < 5; attempt++ {
			port, err := freePort()
			if err != nil {
				t.Fatalf("testredis: pick a port: %v", err)
			}
			s.port = port
			s.conf = filepath.Join(s.dir, "sentinel.conf")
			conf := strings.Join([]string{
				fmt.Sprintf("port %d", port),
				"bind 127.0.0.1",
				"protected-mode no",
				"daemonize no",
				"dir " + s.dir,
				"logfile " + filepath.Join(s.dir, "redis.log"),
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", ss.MasterName, master.port, quorum),
				fmt.Sprintf("sentinel down-after-milliseconds %s %d", ss.MasterName, DownAfter.Milliseconds()),
				fmt.Sprintf("sentinel failover-timeout %s %d", ss.MasterName, FailoverTimeout.Milliseconds()),
				fmt.Sprintf("sentinel parallel-syncs %s 1", ss.MasterName),
				"",
			}, "\n")
			if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			if lastErr = s.start(); lastErr == nil {
				break
			}
		}
		if lastErr != nil {
			t.Fatalf("testredis: start sentinel %d: %v", i, lastErr)
		}
		t.Cleanup(s.cleanup)
		ss.Sentinels = append(ss.Sentinels, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	if err := ss.waitSettled(ctx, n); err != nil {
		t.Fatalf("testredis: sentinel set did not settle: %v", err)
	}
	return ss
}

// waitSettled polls until the replica's link to the master is up and every
// sentinel sees the replica and the n-1 other sentinels.
func (ss *SentinelSet) waitSettled(ctx context.Context, n int) error {
	rc := redis.NewClient(&redis.Options{Addr: ss.Replica.Addr()})
	defer rc.Close()
	var why string
	for {
		why = ""
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "master_link_status:up") {
			why = fmt.Sprintf("replica not in sync (%v)", err)
		}
		for i, s := range ss.Sentinels {
			if why != "" {
				break
			}
			sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
			reps, err := sc.Replicas(ctx, ss.MasterName).Result()
			var sens []map[string]string
			if err == nil {
				sens, err = sc.Sentinels(ctx, ss.MasterName).Result()
			}
			_ = sc.Close()
			switch {
			case err != nil:
				why = fmt.Sprintf("sentinel %d: %v", i, err)
			case len(reps) == 0:
				why = fmt.Sprintf("sentinel %d does not know the replica yet", i)
			case len(sens) < n-1:
				why = fmt.Sprintf("sentinel %d knows %d other sentinels, want %d", i, len(sens), n-1)
			}
		}
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SentinelAddrs are the sentinels' host:port addresses.
func (ss *SentinelSet) SentinelAddrs() []string {
	out := make([]string, len(ss.Sentinels))
	for i, s := range ss.Sentinels {
		out[i] = s.Addr()
	}
	return out
}

// URL is the set as a redis-sentinel:// setting (see internal/redisconn).
func (ss *SentinelSet) URL() string {
	return "redis-sentinel://" + strings.Join(ss.SentinelAddrs(), ",") + "/" + ss.MasterName
}

// NewClient returns a failover client of the set (it asks the sentinels
// for the master and follows failovers), closed when the test ends.
func (ss *SentinelSet) NewClient() *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: ss.MasterName, SentinelAddrs: ss.SentinelAddrs()})
	ss.t.Cleanup(func() { _ = c.Close() })
	return c
}

// MasterAddr asks the first sentinel which address the master has now.
func (ss *SentinelSet) MasterAddr(ctx context.Context) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: ss.Sentinels[0].Addr()})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(ctx, ss.MasterName).Result()
	if err != nil {
		return "", err
	}
	return a[0] + ":" + a[1], nil
}
