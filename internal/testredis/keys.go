package testredis

import (
	"context"
	"sort"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Keys lists the whole keyspace of rdb (every master of a cluster),
// sorted, for tests that check what a change left behind.
func Keys(t testing.TB, rdb redis.UniversalClient) []string {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var keys []string
	scan := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, "*", 1000).Iterator()
		for it.Next(ctx) {
			mu.Lock()
			keys = append(keys, it.Val())
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		t.Fatalf("testredis: cannot scan a %T", rdb)
	}
	if err != nil {
		t.Fatalf("testredis: scan the keyspace: %v", err)
	}
	sort.Strings(keys)
	return keys
}
