package web

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/orchestratorchat/hubfarm/backplane"
)

// FarmSource is what FarmAPI reads: the serving node's id, the farm's live
// nodes, where a connection lives, and the serving node's metrics.
type FarmSource struct {
	// NodeID is the id of the node serving the request.
	NodeID string
	// Nodes lists the farm's live nodes (the backplane registry).
	Nodes func(ctx context.Context) ([]backplane.NodeInfo, error)
	// ConnectionNode returns the id of the node holding a connection, or ""
	// when no node holds it. Optional.
	ConnectionNode func(ctx context.Context, connID string) (string, error)
	// MessageTotals reads the serving node's message counters (records
	// received from and sent to its clients). Optional. A direct read: a
	// Gather of the node's registry would also run the scrape-time
	// collectors, which ask Redis, on every poll of every console.
	MessageTotals func() (in, out uint64)
	// Authenticate, if set, must accept a request before it is answered
	// (a farm with JWT authentication: the caller's bearer token). Default:
	// every request is answered (an open farm).
	Authenticate func(r *http.Request) error
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// FarmNode is one live node in a FarmView.
type FarmNode struct {
	ID            string    `json:"id"`
	Address       string    `json:"address"`
	Connections   int       `json:"connections"`
	Started       time.Time `json:"started"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// MessagesIn and MessagesOut are the node's cumulative message counts
	// as of LastHeartbeat: two answers with different heartbeats give the
	// node's message rate, whichever nodes served them.
	MessagesIn  uint64 `json:"messagesIn"`
	MessagesOut uint64 `json:"messagesOut"`
}

// ServedBy describes the node that answered a FarmView request, with its
// cumulative message counters: a client derives a node's message rate from
// two answers of the same node.
type ServedBy struct {
	ID          string `json:"id"`
	MessagesIn  uint64 `json:"messagesIn"`
	MessagesOut uint64 `json:"messagesOut"`
}

// FarmView is the answer of GET /api/farm.
type FarmView struct {
	Nodes    []FarmNode `json:"nodes"`
	ServedBy ServedBy   `json:"servedBy"`
	// Connections maps each connection id asked for (?connection=ID, up to
	// 8) to the id of the node holding it ("" when unknown).
	Connections map[string]string `json:"connections"`
	Time        time.Time         `json:"time"`
}

// maxConnLookups bounds the ?connection= lookups of one request.
const maxConnLookups = 8

// FarmAPI serves GET /api/farm: the live nodes of the farm with their
// connection counts and heartbeats, the node that served the request with
// its message counters, and — for each ?connection=ID — the node holding
// that connection. On a farm with authentication only a caller with a
// valid token gets an answer (node addresses are not for everyone).
func FarmAPI(src FarmSource) http.Handler {
	now := src.Now
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if src.Authenticate != nil {
			if err := src.Authenticate(r); err != nil {
				// The reason stays out of the answer, as on the hubs.
				w.Header().Set("WWW-Authenticate", "Bearer")
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid bearer token is required"})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		view := FarmView{Nodes: []FarmNode{}, ServedBy: ServedBy{ID: src.NodeID},
			Connections: map[string]string{}, Time: now().UTC()}
		nodes, err := src.Nodes(ctx)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{
				"error": "the farm registry is unavailable", "servedBy": src.NodeID})
			return
		}
		for _, n := range nodes {
			view.Nodes = append(view.Nodes, FarmNode{ID: n.ID, Address: n.Address, Connections: n.Connections,
				Started: n.Started.UTC(), LastHeartbeat: n.LastHeartbeat.UTC(),
				MessagesIn: n.MessagesIn, MessagesOut: n.MessagesOut})
		}
		if src.ConnectionNode != nil {
			ids := r.URL.Query()["connection"]
			if len(ids) > maxConnLookups {
				ids = ids[:maxConnLookups]
			}
			for _, id := range ids {
				if id == "" || len(id) > 128 {
					continue
				}
				node, err := src.ConnectionNode(ctx, id)
				if err != nil {
					node = ""
				}
				view.Connections[id] = node
			}
		}
		if src.MessageTotals != nil {
			view.ServedBy.MessagesIn, view.ServedBy.MessagesOut = src.MessageTotals()
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, view)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
