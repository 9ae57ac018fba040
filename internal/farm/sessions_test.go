package farm_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// keysContaining lists the keys (on every master of a cluster) whose name
// contains s.
func keysContaining(t *testing.T, rdb redis.UniversalClient, s string) []string {
	t.Helper()
	var out []string
	for _, k := range testredis.Keys(t, rdb) {
		if strings.Contains(k, s) {
			out = append(out, k)
		}
	}
	return out
}

// TestJoinUnknownSessionLeavesNoKey: on an open farm, joining a session id
// that does not exist answers SESSION_NOT_FOUND and leaves nothing in Redis
// that outlives the connection: no session key, no entry in the user's
// sessions, so a reconnect does not rejoin the id.
func TestJoinUnknownSessionLeavesNoKey(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 2, nil)
		rdb := b.NewClient()
		ctx := context.Background()
		const hub = "/hubs/orchestrator"
		const bogus = "no-such-session-7f3a"
		bob := dial(t, f.nodes[0].URL(), hub, "bob")
		errs := record(bob, "ReceiveError")
		sid := createSession(t, bob, "real")

		invoke(t, bob, nil, "JoinSession", bogus)
		waitFor(t, 5*time.Second, "SESSION_NOT_FOUND", func() bool { return len(errs.snapshot()) >= 1 })
		var e contract.ErrorResponse
		if err := json.Unmarshal(errs.snapshot()[0], &e); err != nil || e.Code != contract.CodeSessionNotFound {
			t.Fatalf("ReceiveError %s (%v), want code %s", errs.snapshot()[0], err, contract.CodeSessionNotFound)
		}
		if keys := keysContaining(t, rdb, "{"+bogus+"}"); len(keys) != 0 {
			t.Fatalf("session keys of the unknown id: %v", keys)
		}
		if ids, err := rdb.SMembers(ctx, "hf:user:bob:sessions").Result(); err != nil || !slices.Equal(ids, []string{sid}) {
			t.Fatalf("bob's sessions %v (%v), want [%s]", ids, err, sid)
		}

		// The connection's own group membership ends with it.
		_ = bob.Close()
		waitFor(t, 5*time.Second, "no key naming the unknown id", func() bool {
			return len(keysContaining(t, rdb, bogus)) == 0
		})

		// Reconnected (on the other node), bob is back in his session and
		// in nothing else.
		bob2 := dial(t, f.nodes[1].URL(), hub, "bob")
		msgs := record(bob2, "ReceiveSessionMessage")
		// The rejoin runs before the connection's first invocation.
		invoke(t, bob2, nil, "GetSessionHistory", sid, nil, 1)
		alice := dial(t, f.nodes[0].URL(), hub, "alice")
		invoke(t, alice, nil, "JoinSession", sid)
		invoke(t, alice, nil, "SendSessionMessage", sid, "hi")
		waitFor(t, 5*time.Second, "bob, rejoined, receives", func() bool { return len(msgs.snapshot()) == 1 })
		if keys := keysContaining(t, rdb, bogus); len(keys) != 0 {
			t.Fatalf("keys naming the unknown id after a reconnect: %v", keys)
		}
	}, testredis.WithCluster())
}

// TestConnectedUsersKeepTheirSessionIndex: a user's session index (what a
// reconnect rejoins) expires with the session TTL unless renewed; the node
// renews it for the users it holds connections of, so a user connected for
// longer than the TTL is still rejoined after a reconnect. Anonymous
// connections have no index to renew.
func TestConnectedUsersKeepTheirSessionIndex(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 1, func(c *farm.NodeConfig) { c.UserRenewInterval = 50 * time.Millisecond })
		rdb := b.NewClient()
		ctx := context.Background()
		carol := dial(t, f.nodes[0].URL(), "/hubs/orchestrator", "carol")
		createSession(t, carol, "long-lived")
		const key = "hf:user:carol:sessions"
		// As if most of the TTL had passed since carol last joined.
		if err := rdb.PExpire(ctx, key, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "carol's index renewed to the session TTL", func() bool {
			ttl, err := rdb.PTTL(ctx, key).Result()
			return err == nil && ttl > 6*24*time.Hour
		})
		// Once carol is gone, nothing renews it any more.
		_ = carol.Close()
		waitFor(t, 5*time.Second, "carol's connection gone", func() bool { return f.nodes[0].Hub.ConnectionCount() == 0 })
		if err := rdb.PExpire(ctx, key, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
			if ttl, _ := rdb.PTTL(ctx, key).Result(); ttl > 2*time.Minute {
				t.Fatalf("the index of a user with no connection was renewed (TTL %v)", ttl)
			}
			time.Sleep(10 * time.Millisecond) // pacing: six renewal intervals pass without a renewal
		}
	})
}
