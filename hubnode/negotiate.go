package hubnode

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// newID returns 16 random bytes, base64url-encoded (22 URL-safe characters),
// like ASP.NET Core's connection ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// connectionToken is what negotiate hands out and the WebSocket presents as
// ?id=. It is signed with the farm's shared secret, so any node can verify a
// token another node issued: negotiate on node A and the WebSocket on node B
// needs no sticky session and no Redis round trip. The token binds the
// connection id to the user who negotiated and expires after
// NegotiateTokenTTL.
type connectionToken struct {
	ConnID  string `json:"c"`
	User    string `json:"u"`
	Expires int64  `json:"e"` // unix seconds
}

const tokenVersion = "1"

func signToken(secret []byte, t connectionToken) string {
	payload, _ := json.Marshal(t)
	p := base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(tokenVersion + "." + p))
	return tokenVersion + "." + p + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

var (
	errTokenInvalid = errors.New("connection token is invalid")
	errTokenExpired = errors.New("connection token expired")
)

func verifyToken(secret []byte, token string, now time.Time) (connectionToken, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != tokenVersion {
		return connectionToken{}, errTokenInvalid
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return connectionToken{}, errTokenInvalid
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return connectionToken{}, errTokenInvalid
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return connectionToken{}, errTokenInvalid
	}
	var t connectionToken
	if err := json.Unmarshal(payload, &t); err != nil || t.ConnID == "" {
		return connectionToken{}, errTokenInvalid
	}
	if now.Unix() > t.Expires {
		return connectionToken{}, errTokenExpired
	}
	return t, nil
}

type negotiateTransport struct {
	Transport       string   `json:"transport"`
	TransferFormats []string `json:"transferFormats"`
}

type negotiateResponse struct {
	NegotiateVersion    int                  `json:"negotiateVersion"`
	ConnectionID        string               `json:"connectionId"`
	ConnectionToken     string               `json:"connectionToken,omitempty"`
	AvailableTransports []negotiateTransport `json:"availableTransports"`
}

// negotiate answers POST {hub}/negotiate. Only WebSockets with the JSON (Text)
// format is offered.
func (n *Node) negotiate(h *Hub, w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	if !n.cors(w, r) {
		n.log.Info("negotiate refused: origin not allowed", "audit", true, "hub", h.name, "request_id", requestID(r), "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "Origin not allowed", http.StatusForbidden)
		return
	}
	if !n.ipLimits.allow(clientIP(r), n.cfg.Now()) {
		n.log.Info("negotiate refused: rate limited", "hub", h.name, "request_id", requestID(r), "remote", r.RemoteAddr)
		http.Error(w, "Too many negotiate requests; retry later.", http.StatusTooManyRequests)
		return
	}
	if n.draining.Load() {
		http.Error(w, "Server is shutting down.", http.StatusServiceUnavailable)
		return
	}
	ident, err := n.identify(r)
	if err != nil {
		n.log.Info("negotiate refused: authentication failed", "audit", true, "hub", h.name, "request_id", requestID(r), "remote", r.RemoteAddr, "err", err)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	version := 0
	if v := queryCI(r, "negotiateVersion"); v != "" {
		version, err = strconv.Atoi(v)
		if err != nil || version < 0 {
			writeJSON(w, map[string]string{"error": "The client requested an invalid protocol version '" + v + "'"})
			return
		}
	}
	if version > 1 {
		version = 1
	}
	connID := newID()
	token := signToken(n.cfg.TokenSecret, connectionToken{
		ConnID: connID, User: ident.User, Expires: n.cfg.Now().Add(n.cfg.NegotiateTokenTTL).Unix(),
	})
	resp := negotiateResponse{
		NegotiateVersion:    version,
		ConnectionID:        connID,
		AvailableTransports: []negotiateTransport{{Transport: "WebSockets", TransferFormats: []string{"Text"}}},
	}
	if version >= 1 {
		resp.ConnectionToken = token
	} else {
		// Version 0 clients use connectionId as the id= value.
		resp.ConnectionID = token
	}
	writeJSON(w, resp)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// queryCI reads a query parameter case-insensitively, as ASP.NET Core does.
func queryCI(r *http.Request, name string) string {
	for k, v := range r.URL.Query() {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// identify resolves who is behind a request: the configured Authenticator,
// else (development) the trusted `user` query parameter, else anonymous (the
// caller then uses the connection id as the user).
func (n *Node) identify(r *http.Request) (Identity, error) {
	if n.cfg.Authenticator != nil {
		return n.cfg.Authenticator(r)
	}
	if n.cfg.DevTrustUserParam {
		if u := r.URL.Query().Get("user"); u != "" {
			if len(u) > 128 {
				return Identity{}, errors.New("user parameter too long")
			}
			return Identity{User: u}, nil
		}
	}
	return Identity{}, nil
}

// requestIDHeader carries a request's id: taken from the load balancer when
// it sets one, made up otherwise, echoed in the response, and logged on every
// line about the request (and on the line that accepts its connection).
const requestIDHeader = "X-Request-Id"

func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	id := r.Header.Get(requestIDHeader)
	if id == "" || len(id) > 128 {
		id = newID()
		r.Header.Set(requestIDHeader, id)
	}
	w.Header().Set(requestIDHeader, id)
	return r
}

func requestID(r *http.Request) string { return r.Header.Get(requestIDHeader) }
