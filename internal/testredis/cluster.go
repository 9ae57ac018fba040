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

// Cluster is a Redis Cluster of three masters owned by one test: three
// redis-server processes with --cluster-enabled yes (six with a replica
// each, StartClusterWithReplicas), joined with redis-cli --cluster create,
// stopped when the test ends.
type Cluster struct {
	t testing.TB
	// Masters are the cluster's masters as created, each a Server (Kill,
	// Stop work on them one by one).
	Masters []*Server
	// Replicas[i] replicates Masters[i] (StartClusterWithReplicas; empty
	// otherwise). After a failover the roles are the other way round.
	Replicas []*Server
}

// StartCluster starts a three-master cluster on free loopback ports (each
// with its own cluster bus port), creates it, and waits until every node
// reports cluster_state:ok and the same slot map. Without redis-server or
// redis-cli on PATH the test is skipped with a message saying what to
// install (scripts/test.sh installs both).
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	return startCluster(t, false)
}

// StartClusterWithReplicas is StartCluster with one replica per master
// (six processes), and a node timeout of one second, so that a killed
// master's replica takes over its slots a few seconds later (automatic
// failover). It returns once every replica is attached to its master.
func StartClusterWithReplicas(t testing.TB) *Cluster {
	t.Helper()
	return startCluster(t, true)
}

func startCluster(t testing.TB, replicas bool) *Cluster {
	t.Helper()
	for _, bin := range []string{Binary, CLIBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("testredis: %s not found on PATH: the Redis Cluster tests need it (apt-get install -y redis-server redis-tools)", bin)
		}
	}
	c := &Cluster{t: t}
	nodes, timeout := 3, "2000"
	if replicas {
		nodes, timeout = 6, "1000"
	}
	var servers []*Server
	for range nodes {
		bus, err := freePort()
		if err != nil {
			t.Fatalf("testredis: pick a cluster bus port: %v", err)
		}
		s := startServer(t, func(int) []string {
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", timeout,
				"--cluster-port", strconv.Itoa(bus),
				// Serve what a test asks for even while a slot is being
				// moved or a master is down.
				"--cluster-require-full-coverage", "no",
				// A replica may always take over (its data is as fresh
				// as a test's).
				"--cluster-replica-validity-factor", "0",
			}
		})
		servers = append(servers, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range servers {
		args = append(args, s.Addr())
	}
	n := "0"
	if replicas {
		n = "1"
	}
	args = append(args, "--cluster-replicas", n, "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, CLIBinary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testredis: redis-cli --cluster create: %v\n%s", err, out)
	}
	if !replicas {
		c.Masters = servers
	} else if err := c.assignRoles(ctx, servers); err != nil {
		t.Fatalf("testredis: cluster replicas: %v", err)
	}
	if err := c.waitAgreed(ctx); err != nil {
		t.Fatalf("testredis: cluster did not settle: %v", err)
	}
	return c
}

// assignRoles sorts servers into Masters and Replicas (Replicas[i] of
// Masters[i]) from what each reports, waiting until every replica is
// attached to a master: redis-cli chooses the roles itself.
func (c *Cluster) assignRoles(ctx context.Context, servers []*Server) error {
	byID := map[string]*Server{}
	for _, s := range servers {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
		id, err := cl.ClusterMyID(ctx).Result()
		cl.Close()
		if err != nil {
			return fmt.Errorf("CLUSTER MYID on %s: %w", s.Addr(), err)
		}
		byID[id] = s
	}
	for {
		c.Masters, c.Replicas = nil, nil
		replicaOf := map[*Server]*Server{}
		for _, s := range servers {
			cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
			role, err := cl.Do(ctx, "ROLE").Slice()
			var nodes string
			if err == nil {
				nodes, err = cl.ClusterNodes(ctx).Result()
			}
			cl.Close()
			if err != nil {
				return fmt.Errorf("roles of %s: %w", s.Addr(), err)
			}
			if len(role) > 0 && role[0] == "master" {
				c.Masters = append(c.Masters, s)
				continue
			}
			// The "myself" line of CLUSTER NODES names the master.
			for _, line := range strings.Split(nodes, "\n") {
				f := strings.Fields(line)
				if len(f) > 3 && strings.Contains(f[2], "myself") && byID[f[3]] != nil {
					replicaOf[s] = byID[f[3]]
				}
			}
		}
		if len(c.Masters) == 3 && len(replicaOf) == 3 {
			for _, m := range c.Masters {
				for r, of := range replicaOf {
					if of == m {
						c.Replicas = append(c.Replicas, r)
					}
				}
			}
			if len(c.Replicas) == 3 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d masters, %d replicas attached", ctx.Err(), len(c.Masters), len(replicaOf))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Role reports what s is now: "master", "slave" (a replica), or an error
// (s is down).
func Role(ctx context.Context, s *Server) (string, error) {
	cl := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer cl.Close()
	role, err := cl.Do(ctx, "ROLE").Slice()
	if err != nil {
		return "", err
	}
	if len(role) == 0 {
		return "", fmt.Errorf("ROLE on %s: empty answer", s.Addr())
	}
	r, _ := role[0].(string)
	return r, nil
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
