package hubnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Config holds a node's settings. Zero fields take the default written next
// to them; withDefaults fills them in one place.
type Config struct {
	// NodeID names this node farm-wide. Required.
	NodeID string
	// HandshakeTimeout bounds the wait for the client's handshake. Default 15s.
	HandshakeTimeout time.Duration
	// KeepAliveInterval: the node sends a Ping when it has written nothing to a
	// connection for this long. Default 15s.
	KeepAliveInterval time.Duration
	// ClientTimeout closes a connection from which nothing was read for this
	// long. Default 30s (twice the clients' ping interval).
	ClientTimeout time.Duration
	// MaxMessageSize caps one incoming hub message (one record, and the
	// handshake), like ASP.NET Core's MaximumReceiveMessageSize; a larger
	// one closes the connection with a Close record saying so. Default
	// 100 KiB.
	MaxMessageSize int64
	// MaxFrameSize caps one incoming WebSocket message, which may carry
	// several hub messages (the JS client sends the calls it queued
	// meanwhile as one WebSocket message), and the bytes of read messages
	// waiting to be decoded; a larger message closes the connection with a
	// Close record. Default four times MaxMessageSize, at least 1 MiB; it
	// must exceed MaxMessageSize.
	MaxFrameSize int64
	// SendQueueFrames caps the records queued for one connection. Default 4096.
	SendQueueFrames int
	// SendQueueBytes caps the bytes queued for one connection. Default 1 MiB.
	// A connection whose queue is full is a slow consumer and is closed.
	SendQueueBytes int
	// MaxBatchBytes caps one WebSocket message assembled from queued records.
	// Default 64 KiB (a single larger record is still written whole).
	MaxBatchBytes int
	// WriteTimeout bounds one WebSocket write; a client that does not drain its
	// socket for this long is closed. Default 10s.
	WriteTimeout time.Duration
	// MaxStreamsPerConnection caps concurrently running server-to-client
	// streams on one connection. Default 16.
	MaxStreamsPerConnection int
	// NegotiateTokenTTL is how long a connection token from negotiate may be
	// used to open the WebSocket. Default 2m.
	NegotiateTokenTTL time.Duration
	// TokenSecret signs connection tokens so that any node can verify a token
	// another node issued (no sticky sessions). Every node of a farm must share
	// it; the server wiring supplies one. Required.
	TokenSecret []byte
	// DevTrustUserParam makes the `user` query parameter the connection's user
	// when no Authenticator is set. Development only.
	DevTrustUserParam bool
	// Authenticator, when set, resolves the user of a negotiate or WebSocket
	// request; an error refuses the request with 401.
	Authenticator func(r *http.Request) (Identity, error)
	// MaxConnections caps the connections this node holds; further
	// WebSocket requests are refused with 503. Default 100000.
	MaxConnections int
	// MaxConnectionsPerUser caps one user's connections farm-wide (counted
	// in the backplane registry); further ones are refused with 429.
	// Default 100.
	MaxConnectionsPerUser int
	// MaxGroupsPerConnection caps the groups one connection may be in.
	// Default 256.
	MaxGroupsPerConnection int
	// InvocationRate is the sustained invocations per second one connection
	// may make (token bucket); InvocationBurst its bucket size. Excess calls
	// are answered with a RATE_LIMITED error. Defaults 200 and 400.
	InvocationRate  float64
	InvocationBurst int
	// MaxQueuedInvocations caps invocations waiting for a connection's
	// dispatcher; beyond it calls are refused. Default 256.
	MaxQueuedInvocations int
	// MaxArgumentDepth caps the JSON nesting depth of hub method arguments.
	// Default 32.
	MaxArgumentDepth int
	// NegotiateRatePerIP is the sustained negotiate and WebSocket requests
	// per second one client IP may make (burst: twice that). Default 20.
	NegotiateRatePerIP float64
	// AllowedOrigins lists the browser origins (scheme://host[:port]) that may
	// negotiate (CORS with credentials) and open WebSockets. "*" allows
	// every origin. Empty: same-origin browsers and non-browser clients only.
	AllowedOrigins []string
	// ScanInterval is the period of the keep-alive scanner. Default 1s.
	ScanInterval time.Duration
	// RedisTimeout bounds backplane calls made on a connection's behalf.
	// Default 5s.
	RedisTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger
}

// Identity is who is behind a connection.
type Identity struct {
	// User is the user id; an anonymous connection is its own user (User
	// is the connection id, and Anonymous is set).
	User string
	// Anonymous: the connection came without a user, so it is a new
	// identity that belongs to no session yet.
	Anonymous bool
	// Roles carries authorisation roles (e.g. "admin").
	Roles []string
	// Expires, when set, is when the credentials stop being valid; the node
	// closes the connection then (the client reconnects with a fresh token).
	Expires time.Time
}

// HasRole reports whether the identity carries role.
func (i Identity) HasRole(role string) bool {
	for _, r := range i.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// IsAdmin reports whether the identity has the admin role.
func (i Identity) IsAdmin() bool { return i.HasRole("admin") }

func (c Config) withDefaults() (Config, error) {
	if c.NodeID == "" {
		return c, errors.New("hubnode: config: NodeID is required")
	}
	if len(c.TokenSecret) == 0 {
		return c, errors.New("hubnode: config: TokenSecret is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, 15*time.Second)
	def(&c.KeepAliveInterval, 15*time.Second)
	def(&c.ClientTimeout, 30*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.NegotiateTokenTTL, 2*time.Minute)
	def(&c.ScanInterval, time.Second)
	def(&c.RedisTimeout, 5*time.Second)
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 100 << 10
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = max(4*c.MaxMessageSize, 1<<20)
	}
	if c.MaxFrameSize <= c.MaxMessageSize {
		return c, fmt.Errorf("hubnode: config: MaxFrameSize %d must exceed MaxMessageSize %d (a WebSocket message holds a whole hub message and its separator)",
			c.MaxFrameSize, c.MaxMessageSize)
	}
	defInt(&c.SendQueueFrames, 4096)
	defInt(&c.SendQueueBytes, 1<<20)
	defInt(&c.MaxBatchBytes, 64<<10)
	defInt(&c.MaxStreamsPerConnection, 16)
	defInt(&c.MaxConnections, 100000)
	defInt(&c.MaxConnectionsPerUser, 100)
	defInt(&c.MaxGroupsPerConnection, 256)
	defInt(&c.InvocationBurst, 400)
	defInt(&c.MaxQueuedInvocations, 256)
	defInt(&c.MaxArgumentDepth, 32)
	if c.InvocationRate <= 0 {
		c.InvocationRate = 200
	}
	if c.NegotiateRatePerIP <= 0 {
		c.NegotiateRatePerIP = 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
