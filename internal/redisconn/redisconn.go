// Package redisconn turns the one Redis setting of a node (--redis) into a
// go-redis UniversalClient for any of the three topologies the farm runs on:
//
//	redis://[[user]:password@]host:port[/db]             one server (rediss:// for TLS)
//	redis-sentinel://[[user]:password@]s1:26379,s2:26379/master[/db]
//	                                                     a Sentinel-managed primary
//	redis-cluster://[[user]:password@]h1:7000,h2:7001    Redis Cluster (seed nodes)
//
// The password of a Sentinel URL is the data servers' password; a password of
// the sentinels themselves goes in the query: ?sentinel_password=...
// (and ?sentinel_username=...). Cluster mode has one database only, so a
// cluster URL takes no /db.
//
// The package also tells the rest of the farm which topology a client talks
// to (TopologyOf), because Redis Cluster changes what is allowed: multi-key
// scripts and transactions only within one hash slot, and pub/sub that
// scales only when sharded (SPUBLISH/SSUBSCRIBE).
package redisconn

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/backoff"
)

// Topology is the shape of the Redis deployment a client talks to.
type Topology int

// Topologies.
const (
	Single   Topology = iota // one redis-server
	Sentinel                 // a primary found through Redis Sentinel, followed across failovers
	Cluster                  // Redis Cluster
)

func (t Topology) String() string {
	switch t {
	case Single:
		return "single"
	case Sentinel:
		return "sentinel"
	case Cluster:
		return "cluster"
	default:
		return "topology(" + strconv.Itoa(int(t)) + ")"
	}
}

// Config is a parsed Redis setting.
type Config struct {
	// Topology says which client NewClient builds.
	Topology Topology
	// Addrs are host:port addresses: the server (Single), the sentinels
	// (Sentinel) or the cluster's seed nodes (Cluster).
	Addrs []string
	// MasterName is the Sentinel master name (Sentinel only).
	MasterName string
	// Username and Password authenticate to the data servers.
	Username, Password string
	// SentinelUsername and SentinelPassword authenticate to the sentinels.
	SentinelUsername, SentinelPassword string
	// DB is the database number (not Cluster).
	DB int

	// single is the full options of a redis:// or rediss:// URL (TLS and
	// query options included), kept so NewClient honours all of them.
	single *redis.Options
}

// Parse reads a Redis setting in one of the forms of the package comment.
func Parse(raw string) (Config, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Config{}, fmt.Errorf("redis setting %q: want redis://, rediss://, redis-sentinel:// or redis-cluster://", redact(raw))
	}
	switch scheme {
	case "redis", "rediss", "unix":
		opts, err := redis.ParseURL(raw)
		if err != nil {
			return Config{}, fmt.Errorf("redis URL %q: %w", redact(raw), err)
		}
		return Config{Topology: Single, Addrs: []string{opts.Addr}, Username: opts.Username,
			Password: opts.Password, DB: opts.DB, single: opts}, nil
	case "redis-sentinel", "redis-cluster":
	default:
		return Config{}, fmt.Errorf("redis setting %q: unknown scheme %q (want redis, rediss, redis-sentinel or redis-cluster)", redact(raw), scheme)
	}
	c := Config{Topology: Sentinel}
	if scheme == "redis-cluster" {
		c.Topology = Cluster
	}
	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	// The user info ends at the last '@': a password may contain '@'.
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		user, pass, hasPass := strings.Cut(authority[:i], ":")
		var err error
		if c.Username, err = url.PathUnescape(user); err != nil {
			return Config{}, fmt.Errorf("redis setting %q: user: %w", redact(raw), err)
		}
		if hasPass {
			if c.Password, err = url.PathUnescape(pass); err != nil {
				return Config{}, fmt.Errorf("redis setting %q: password: %w", redact(raw), err)
			}
		}
		authority = authority[i+1:]
	}
	for _, a := range strings.Split(authority, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return Config{}, fmt.Errorf("redis setting %q: address %q: want host:port", redact(raw), a)
		}
		c.Addrs = append(c.Addrs, a)
	}
	if len(c.Addrs) == 0 {
		return Config{}, fmt.Errorf("redis setting %q: no address", redact(raw))
	}
	segs := []string{}
	if path != "" {
		segs = strings.Split(strings.Trim(path, "/"), "/")
	}
	switch c.Topology {
	case Sentinel:
		if len(segs) == 0 || segs[0] == "" {
			return Config{}, fmt.Errorf("redis setting %q: the Sentinel master name is missing (redis-sentinel://host:26379/mymaster)", redact(raw))
		}
		c.MasterName = segs[0]
		if len(segs) > 2 {
			return Config{}, fmt.Errorf("redis setting %q: want /master or /master/db", redact(raw))
		}
		if len(segs) == 2 {
			db, err := strconv.Atoi(segs[1])
			if err != nil || db < 0 {
				return Config{}, fmt.Errorf("redis setting %q: database %q is not a number", redact(raw), segs[1])
			}
			c.DB = db
		}
	case Cluster:
		if len(segs) > 0 {
			return Config{}, fmt.Errorf("redis setting %q: Redis Cluster has no databases; drop the path", redact(raw))
		}
	}
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return Config{}, fmt.Errorf("redis setting %q: query: %w", redact(raw), err)
		}
		for k, v := range q {
			switch k {
			case "sentinel_password":
				c.SentinelPassword = v[len(v)-1]
			case "sentinel_username":
				c.SentinelUsername = v[len(v)-1]
			default:
				return Config{}, fmt.Errorf("redis setting %q: unknown option %q", redact(raw), k)
			}
		}
		if c.Topology != Sentinel && (c.SentinelPassword != "" || c.SentinelUsername != "") {
			return Config{}, fmt.Errorf("redis setting %q: sentinel options need redis-sentinel://", redact(raw))
		}
	}
	return c, nil
}

// NewClient builds the client of c's topology: a Client, a FailoverClient
// (which asks the sentinels for the primary and follows it across
// failovers) or a ClusterClient.
//
// Every topology retries a failed dial after a jittered wait
// (DialRetryWait) instead of go-redis's constant 100 ms, so that the nodes
// of a farm that all lost Redis at once do not redial it in lock step.
func (c Config) NewClient() redis.UniversalClient {
	switch c.Topology {
	case Sentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: c.Addrs,
			SentinelUsername: c.SentinelUsername, SentinelPassword: c.SentinelPassword,
			Username: c.Username, Password: c.Password, DB: c.DB,
			DialerRetryBackoff: DialRetryWait,
		})
	case Cluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Addrs, Username: c.Username, Password: c.Password,
			DialerRetryBackoff: DialRetryWait,
		})
	default:
		if c.single != nil {
			o := *c.single
			if o.DialerRetryBackoff == nil {
				o.DialerRetryBackoff = DialRetryWait
			}
			return redis.NewClient(&o)
		}
		return redis.NewClient(&redis.Options{Addr: c.Addrs[0], Username: c.Username, Password: c.Password, DB: c.DB,
			DialerRetryBackoff: DialRetryWait})
	}
}

// DialRetryWait is the wait before a dial retry of a client NewClient
// builds, whatever the attempt: a random wait between 50 and 100 ms. It
// stays under go-redis's constant 100 ms because a command waits for the
// retries of its dial: during an outage a caller must hear of the failure
// as soon as before.
func DialRetryWait(int) time.Duration {
	return backoff.Jitter(100*time.Millisecond, nil)
}

// String describes c for logs, without passwords.
func (c Config) String() string {
	s := c.Topology.String() + " " + strings.Join(c.Addrs, ",")
	if c.MasterName != "" {
		s += " master " + c.MasterName
	}
	if c.Topology != Cluster && c.DB != 0 {
		s += " db " + strconv.Itoa(c.DB)
	}
	return s
}

// TopologyOf tells which topology rdb talks to. A ClusterClient is Cluster;
// anything else (a Client, a FailoverClient, a Ring) behaves like one
// server for the farm's purposes: every key and channel on one primary.
func TopologyOf(rdb redis.UniversalClient) Topology {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return Cluster
	}
	return Single
}

// redact hides the password of a URL in error messages.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	authority, tail, hasTail := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		if user, _, hasPass := strings.Cut(authority[:i], ":"); hasPass {
			authority = user + ":xxxxx" + authority[i:]
		}
	}
	if hasTail {
		authority += "/" + tail
	}
	return scheme + "://" + authority
}
