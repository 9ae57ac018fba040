package redisconn

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
	}{
		{"redis://127.0.0.1:6379/2", Config{Topology: Single, Addrs: []string{"127.0.0.1:6379"}, DB: 2}},
		{"redis://:pw@h:1", Config{Topology: Single, Addrs: []string{"h:1"}, Password: "pw"}},
		{"redis-sentinel://s1:26379,s2:26379/mymaster", Config{Topology: Sentinel,
			Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster"}},
		{"redis-sentinel://u:p%40ss@s1:26379/m/3?sentinel_password=sp", Config{Topology: Sentinel,
			Addrs: []string{"s1:26379"}, MasterName: "m", DB: 3, Username: "u", Password: "p@ss", SentinelPassword: "sp"}},
		{"redis-sentinel://:pw@s1:1/m", Config{Topology: Sentinel, Addrs: []string{"s1:1"}, MasterName: "m", Password: "pw"}},
		{"redis-cluster://h1:7000,h2:7001,h3:7002", Config{Topology: Cluster,
			Addrs: []string{"h1:7000", "h2:7001", "h3:7002"}}},
		{"redis-cluster://:secret@h1:7000/", Config{Topology: Cluster, Addrs: []string{"h1:7000"}, Password: "secret"}},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		got.single = nil
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"127.0.0.1:6379",                          // no scheme
		"memcached://h:1",                         // unknown scheme
		"redis-sentinel://s1:26379",               // no master name
		"redis-sentinel://s1:26379/m/x",           // bad db
		"redis-sentinel://s1:26379/m/1/2",         // too many segments
		"redis-cluster://h1:7000/0",               // cluster has no db
		"redis-cluster://h1",                      // no port
		"redis-cluster://",                        // no address
		"redis-cluster://h:1?sentinel_password=x", // sentinel option elsewhere
		"redis-sentinel://h:1/m?bogus=1",          // unknown option
	} {
		if c, err := Parse(in); err == nil {
			t.Errorf("%s: accepted as %+v", in, c)
		}
	}
	// Passwords never appear in errors.
	_, err := Parse("redis-cluster://:topsecret@h1")
	if err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Fatalf("error %v", err)
	}
}

func TestNewClientTopology(t *testing.T) {
	for in, want := range map[string]Topology{
		"redis://127.0.0.1:1/0":          Single,
		"redis-sentinel://127.0.0.1:1/m": Single, // a FailoverClient is one primary at a time
		"redis-cluster://127.0.0.1:1":    Cluster,
	} {
		c, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		rdb := c.NewClient()
		if got := TopologyOf(rdb); got != want {
			t.Errorf("%s: topology %v, want %v", in, got, want)
		}
		switch c.Topology {
		case Cluster:
			if _, ok := rdb.(*redis.ClusterClient); !ok {
				t.Errorf("%s: %T", in, rdb)
			}
		default:
			if _, ok := rdb.(*redis.Client); !ok {
				t.Errorf("%s: %T", in, rdb)
			}
		}
		_ = rdb.Close()
	}
}

func TestDialRetryWaitIsJitteredUnderTheDefault(t *testing.T) {
	seen := map[time.Duration]bool{}
	for attempt := range 200 {
		d := DialRetryWait(attempt % 5)
		if d < 50*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("attempt %d: wait %v outside [50ms, 100ms]", attempt%5, d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct waits in 200 draws: not jittered", len(seen))
	}
}
