package farm

import (
	"context"
	"time"
)

// renewUsers keeps the session indexes of this node's connected users
// alive. A user's index (the sessions a reconnect rejoins) lives as long
// as an idle session and is renewed when the user connects, creates or
// joins a session; a user who stays connected for longer than that
// without doing either would lose it and not be rejoined after the next
// reconnect. Every UserRenewInterval the node renews the indexes of the
// users it holds connections of (one pipelined round trip per 500 users).
// The loop ends when the node stops (stopLoops).
func (n *Node) renewUsers() {
	defer close(n.renewDone)
	interval := n.cfg.UserRenewInterval
	if interval <= 0 {
		interval = time.Hour
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.renewQuit:
			return
		case <-t.C:
		}
		seen := map[string]struct{}{}
		var users []string
		for _, c := range n.Hub.Connections() {
			id := c.Identity()
			if id.Anonymous || id.User == "" {
				continue
			}
			if _, ok := seen[id.User]; !ok {
				seen[id.User] = struct{}{}
				users = append(users, id.User)
			}
		}
		if len(users) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := n.Sessions.RenewUsers(ctx, users); err != nil {
			n.log.Warn("renewing connected users' session indexes failed; retried next interval", "users", len(users), "err", err)
		}
		cancel()
	}
}
