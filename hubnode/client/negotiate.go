package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
)

// userAgent identifies this client; the JS client sends a similar string.
func userAgent() string { return "hubfarm-go-client/1.0 (Go; " + runtime.Version() + ")" }

// maxRedirects matches the JS client's negotiate redirect limit.
const maxRedirects = 100

// maxNegotiateBody bounds what is read from a negotiate response.
const maxNegotiateBody = 1 << 20

// NegotiateResponse is the body of a negotiate response. Unknown fields are
// ignored.
type NegotiateResponse struct {
	// NegotiateVersion is the version the server chose (0 or 1).
	NegotiateVersion int `json:"negotiateVersion"`
	// ConnectionID is the public id of the new connection.
	ConnectionID string `json:"connectionId"`
	// ConnectionToken is the secret to present as id= on the WebSocket. For
	// version 0 responses Negotiate copies ConnectionID into it, as the JS
	// client does.
	ConnectionToken string `json:"connectionToken"`
	// AvailableTransports lists the transports in the server's order of
	// preference.
	AvailableTransports []AvailableTransport `json:"availableTransports"`
	// URL, when set, redirects the client to negotiate against another hub
	// URL.
	URL string `json:"url,omitempty"`
	// AccessToken, when set together with URL, is the bearer token to use
	// against the redirect target.
	AccessToken string `json:"accessToken,omitempty"`
	// UseStatefulReconnect is true when the server enabled stateful
	// reconnect; this client never asks for it.
	UseStatefulReconnect bool `json:"useStatefulReconnect,omitempty"`
	// Error is the server's refusal text; Negotiate turns it into an error.
	Error string `json:"error,omitempty"`
}

// AvailableTransport is one entry of NegotiateResponse.AvailableTransports.
type AvailableTransport struct {
	// Transport is "WebSockets", "ServerSentEvents" or "LongPolling".
	Transport string `json:"transport"`
	// TransferFormats lists "Text" and/or "Binary".
	TransferFormats []string `json:"transferFormats"`
}

// supportsWebSocketText reports whether the server offers what this client
// speaks: WebSockets with the Text transfer format (the JSON protocol).
func (r *NegotiateResponse) supportsWebSocketText() bool {
	for _, t := range r.AvailableTransports {
		if t.Transport != "WebSockets" {
			continue
		}
		for _, f := range t.TransferFormats {
			if f == "Text" {
				return true
			}
		}
	}
	return false
}

// Negotiate performs a single negotiate request (POST {hubURL}/negotiate)
// with the headers and access token of opts. It does not follow a redirect
// response: the URL and AccessToken fields tell the caller where to go. An
// error payload from the server is returned as an error. Together with
// DialToken it lets a test negotiate on one node and open the WebSocket on
// another.
func Negotiate(ctx context.Context, hubURL string, opts Options) (NegotiateResponse, error) {
	opts = opts.withDefaults()
	token := ""
	if opts.AccessToken != nil {
		t, err := opts.AccessToken()
		if err != nil {
			return NegotiateResponse{}, fmt.Errorf("negotiate: access token: %w", err)
		}
		token = t
	}
	return negotiate(ctx, hubURL, token, &opts)
}

func negotiate(ctx context.Context, hubURL, token string, opts *Options) (NegotiateResponse, error) {
	u, err := negotiateURL(hubURL, opts.NegotiateVersion)
	if err != nil {
		return NegotiateResponse{}, fmt.Errorf("negotiate: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return NegotiateResponse{}, fmt.Errorf("negotiate: %w", err)
	}
	req.Header = requestHeader(opts.Header, token)
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	resp, err := opts.HTTPClient.Do(req)
	if err != nil {
		return NegotiateResponse{}, fmt.Errorf("negotiate: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxNegotiateBody))
	if err != nil {
		return NegotiateResponse{}, fmt.Errorf("negotiate: reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return NegotiateResponse{}, &StatusError{Op: "negotiate", StatusCode: resp.StatusCode, Body: snippet(body)}
	}
	var r struct {
		NegotiateResponse
		// Classic ASP.NET SignalR answers with ProtocolVersion.
		ProtocolVersion json.RawMessage `json:"ProtocolVersion"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return NegotiateResponse{}, fmt.Errorf("negotiate: malformed response: %w", err)
	}
	nr := r.NegotiateResponse
	switch {
	case r.ProtocolVersion != nil:
		return nr, errors.New("negotiate: the server is a classic ASP.NET SignalR server, which this client does not support")
	case nr.Error != "":
		return nr, fmt.Errorf("negotiate: server refused the connection: %s", nr.Error)
	}
	if nr.NegotiateVersion < 1 && nr.ConnectionToken == "" {
		// Version 0 has no separate token: the id doubles as the token.
		nr.ConnectionToken = nr.ConnectionID
	}
	return nr, nil
}

// negotiateURL appends /negotiate to the path of hubURL and adds
// negotiateVersion unless the caller already put one in the query, like the
// JS client. WebSocket schemes are mapped to their HTTP counterparts.
func negotiateURL(hubURL string, version int) (string, error) {
	u, err := httpURL(hubURL)
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.Path += "negotiate"
	if u.RawPath != "" {
		if !strings.HasSuffix(u.RawPath, "/") {
			u.RawPath += "/"
		}
		u.RawPath += "negotiate"
	}
	if !strings.Contains(strings.ToLower(u.RawQuery), "negotiateversion=") {
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += "negotiateVersion=" + strconv.Itoa(version)
	}
	u.Fragment = ""
	return u.String(), nil
}

// httpURL parses hubURL, accepting http, https, ws and wss, and returns it
// with an HTTP scheme.
func httpURL(hubURL string) (*url.URL, error) {
	u, err := url.Parse(hubURL)
	if err != nil {
		return nil, fmt.Errorf("invalid hub URL: %w", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("invalid hub URL %q: scheme must be http, https, ws or wss", hubURL)
	}
	return u, nil
}

// webSocketURL maps hubURL to ws/wss and adds id=token when token is set.
func webSocketURL(hubURL, token string) (string, error) {
	u, err := httpURL(hubURL)
	if err != nil {
		return "", err
	}
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	if token != "" {
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += "id=" + url.QueryEscape(token)
	}
	u.Fragment = ""
	return u.String(), nil
}

// requestHeader builds the headers of negotiate and upgrade requests: the
// caller's extra headers, our User-Agent unless overridden, and the bearer
// token, which wins over a caller-supplied Authorization as in the JS client.
func requestHeader(extra http.Header, token string) http.Header {
	h := make(http.Header, len(extra)+2)
	for k, v := range extra {
		h[k] = append([]string(nil), v...)
	}
	if h.Get("User-Agent") == "" {
		h.Set("User-Agent", userAgent())
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return h
}

// snippet shortens a response body for an error message.
func snippet(b []byte) string {
	const limit = 512
	s := strings.TrimSpace(string(b))
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}
