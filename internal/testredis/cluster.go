package testredis

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// CLIBinary is the redis-cli executable (Debian's redis-tools, a dependency
// of redis-server) that creates clusters.
const CLIBinary = "redis-cli"

// clusterTimeout bounds how long a new cluster may take to agree on its
// slots.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of three masters (no replicas) owned by one
// test: three redis-server processes with --cluster-enabled yes, joined
// with redis-cli --cluster create, stopped when the test ends.
type Cluster struct {
	t testing.TB
	// Masters are the cluster's nodes, each a Server (Kill, Stop work on
	// them one by one).
	Masters []*Server
}

// StartCluster starts a three-master cluster on free loopback ports (each
// with its own cluster bus port), creates it, and waits until every node
// reports cluster_state:ok and the same slot map. Without redis-server or
// redis-cli on PATH the test is skipped with a message saying what to
// install (scripts/test.sh installs both).
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	for _, bin := range []string{Binary, CLIBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("testredis: %s not found on PATH: the Redis Cluster tests need it (apt-get install -y redis-server redis-tools)", bin)
		}
	}
	c := &Cluster{t: t}
	for range 3 {
		bus, err := freePort()
		if err != nil {
			t.Fatalf("testredis: pick a cluster bus port: %v", err)
		}
		s := startServer(t, func(int) []string {
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000",
				"--cluster-port", strconv.Itoa(bus),
				// Serve what a test asks for even while a slot is being
				// moved or a master is down.
				"--cluster-require-full-coverage", "no",
			}
		})
		c.Masters = append(c.Masters, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Masters {
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, CLIBinary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testredis: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitAgreed(ctx); err != nil {
		t.Fatalf("testredis: cluster did not settle: %v", err)
	}
	return c
}

// waitAgreed polls every node until each says cluster_state:ok and all
// report the same slot-to-master map covering all 16384 slots.
func (c *Cluster) waitAgreed(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.Masters))
	for i, s := range c.Masters {
		clients[i] = redis.NewClient(&redis.Options{Addr: s.Addr()})
		defer clients[i].Close()
	}
	var last string
	for {
		ok, why := true, ""
		var maps []string
		for i, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok, why = false, fmt.Sprintf("node %d: state not ok (%v)", i, err)
				break
			}
			slots, err := cl.ClusterSlots(ctx).Result()
			if err != nil {
				ok, why = false, fmt.Sprintf("node %d: CLUSTER SLOTS: %v", i, err)
				break
			}
			covered := 0
			var sb strings.Builder
			for _, s := range slots {
				covered += int(s.End-s.Start) + 1
				if len(s.Nodes) > 0 {
					fmt.Fprintf(&sb, "%d-%d:%s;", s.Start, s.End, s.Nodes[0].Addr)
				}
			}
			if covered != 16384 {
				ok, why = false, fmt.Sprintf("node %d covers %d slots", i, covered)
				break
			}
			maps = append(maps, sortedFields(sb.String()))
		}
		if ok {
			for _, m := range maps[1:] {
				if m != maps[0] {
					ok, why = false, "nodes disagree on the slot map"
				}
			}
		}
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func sortedFields(s string) string {
	f := strings.Split(strings.TrimSuffix(s, ";"), ";")
	for i := 1; i < len(f); i++ {
		for j := i; j > 0 && f[j] < f[j-1]; j-- {
			f[j], f[j-1] = f[j-1], f[j]
		}
	}
	return strings.Join(f, ";")
}

// Addrs are the masters' host:port addresses (the seed addresses).
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, s := range c.Masters {
		out[i] = s.Addr()
	}
	return out
}

// URL is the cluster as a redis-cluster:// setting (see internal/redisconn).
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs(), ",") }

// NewClient returns a cluster client seeded with every master, closed when
// the test ends.
func (c *Cluster) NewClient() *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// MoveSlot moves an empty slot (one without keys, such as the slot of a
// pub/sub channel's hash tag) to the master at index to, the way an
// operator's resharding does: the target takes the slot first, then every
// node learns the new owner. It returns the index of the previous owner.
func (c *Cluster) MoveSlot(ctx context.Context, slot, to int) (from int, err error) {
	ids := make([]string, len(c.Masters))
	clients := make([]*redis.Client, len(c.Masters))
	for i, s := range c.Masters {
		clients[i] = redis.NewClient(&redis.Options{Addr: s.Addr()})
		defer clients[i].Close()
		id, err := clients[i].ClusterMyID(ctx).Result()
		if err != nil {
			return -1, fmt.Errorf("CLUSTER MYID of node %d: %w", i, err)
		}
		ids[i] = id
	}
	from = -1
	slots, err := clients[0].ClusterSlots(ctx).Result()
	if err != nil {
		return -1, err
	}
	for _, s := range slots {
		if int(s.Start) <= slot && slot <= int(s.End) && len(s.Nodes) > 0 {
			for i, m := range c.Masters {
				if s.Nodes[0].Addr == m.Addr() {
					from = i
				}
			}
		}
	}
	if from < 0 {
		return -1, fmt.Errorf("no owner of slot %d", slot)
	}
	if from == to {
		return from, nil
	}
	if n, err := clients[from].ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != 0 {
		return from, fmt.Errorf("slot %d holds %d keys (%v): only empty slots are moved", slot, n, err)
	}
	// Target first, then the old owner, then the rest (CLUSTER SETSLOT
	// NODE on each, as the Redis Cluster specification orders it).
	order := []int{to, from}
	for i := range c.Masters {
		if i != to && i != from {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if err := clients[i].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to]).Err(); err != nil {
			return from, fmt.Errorf("CLUSTER SETSLOT %d NODE on node %d: %w", slot, i, err)
		}
	}
	return from, nil
}
