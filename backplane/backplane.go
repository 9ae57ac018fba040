// Package backplane is everything Redis-shaped about the farm's real-time
// layer: cross-node fan-out over Redis pub/sub, the farm-wide registry of
// connections, groups and users, node heartbeats and the cleanup of dead
// nodes by the survivors.
//
// Delivery guarantees (what the hub node may rely on):
//   - Frames are published as opaque bytes, serialised once by the caller; the
//     receiving node writes the same bytes to each local member.
//   - A node never receives its own publications back: the publisher delivers
//     to its local members itself (so local delivery keeps working while Redis
//     is down), and the backplane drops messages whose origin is this node.
//   - Order: publications from one node are sent to Redis in call order over a
//     single ordered pipeline, so frames from one sender to one group arrive at
//     every remote member in send order.
//   - At-most-once: pub/sub keeps nothing. What must survive a Redis outage is
//     kept elsewhere (session history streams).
//   - JoinGroup returns only after Redis has confirmed the group channel
//     subscription, so a publication made after JoinGroup returns reaches the
//     joined connection.
package backplane

import (
	"time"
)

// Scope says which kind of target a delivery addresses.
type Scope byte

// Delivery scopes.
const (
	ScopeGroup      Scope = 1 // every local member of Key (a group name)
	ScopeUser       Scope = 2 // every local connection of Key (a user id)
	ScopeAll        Scope = 3 // every local connection
	ScopeConnection Scope = 4 // the local connection Key (a connection id)
	ScopeNode       Scope = 5 // a control message for this node
)

// Kind says what a delivery carries.
type Kind byte

// Delivery kinds.
const (
	KindFrame      Kind = 1 // Frame is a complete hub protocol frame to write
	KindJoinGroup  Kind = 2 // every local connection of user Key joins group Arg
	KindLeaveGroup Kind = 3 // every local connection of user Key leaves group Arg
	KindClose      Kind = 4 // close local connection Key; Arg is the reason
	KindControl    Kind = 5 // an application control message: Arg names it, Frame is its body
)

// Delivery is one message received from another node.
type Delivery struct {
	Scope   Scope
	Kind    Kind
	Key     string // group name, user id or connection id, per Scope
	Arg     string // group name for Join/LeaveGroup, reason for Close, name for Control
	Exclude string // connection id that must not receive the frame ("" = none)
	Origin  string // node id of the publisher
	Frame   []byte // valid only during the Handler call; copy to keep
}

// Handler receives deliveries from other nodes. It is called from the
// backplane's single receive goroutine in arrival order and must not block:
// hand slow work to a queue.
type Handler func(d Delivery)

// ConnInfo is the registry entry of a connection.
type ConnInfo struct {
	ID          string
	Hub         string
	User        string
	Remote      string
	ConnectedAt time.Time
}

// NodeInfo is the registry entry of a live node.
type NodeInfo struct {
	ID            string
	Address       string
	Started       time.Time
	LastHeartbeat time.Time
	Connections   int
}
