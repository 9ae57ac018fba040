package client

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors, for use with errors.Is.
var (
	// ErrNotConnected is returned by Invoke, Send and Stream while the
	// connection is not in the Connected state: before Start, while
	// reconnecting, or after it stopped.
	ErrNotConnected = errors.New("signalr client: not connected")

	// ErrConnectionClosed fails invocations and streams still waiting for
	// their Completion when the underlying connection goes away. The error
	// also wraps the reason the connection ended.
	ErrConnectionClosed = errors.New("signalr client: invocation canceled because the underlying connection was closed")

	// ErrServerClosed is wrapped by the error that ends a connection because
	// the server sent a Close message.
	ErrServerClosed = errors.New("signalr client: server closed the connection")

	// ErrServerTimeout ends a connection that received nothing from the
	// server for Options.ServerTimeout.
	ErrServerTimeout = errors.New("signalr client: server timeout elapsed without receiving a message from the server")

	// ErrStreamCanceled is returned by Stream.Next after Stream.Cancel or
	// after the context given to Conn.Stream was done.
	ErrStreamCanceled = errors.New("signalr client: stream canceled")
)

// InvocationError is a hub method failure reported by the server in the
// error field of a Completion. The connection stays usable.
type InvocationError struct {
	// Target is the hub method that was invoked.
	Target string
	// Message is the server's error text, verbatim.
	Message string
}

// Error implements error.
func (e *InvocationError) Error() string {
	return fmt.Sprintf("invocation of %s failed: %s", e.Target, e.Message)
}

// HandshakeError is returned when the server rejects the hub protocol
// handshake (for example an unsupported protocol or version).
type HandshakeError struct {
	// Message is the server's error text, verbatim.
	Message string
}

// Error implements error.
func (e *HandshakeError) Error() string {
	return "server returned handshake error: " + e.Message
}

// StatusError is an unexpected HTTP status on negotiate or on the WebSocket
// upgrade. A 404 on the upgrade of a negotiated connection usually means the
// upgrade reached a node other than the one that negotiated.
type StatusError struct {
	// Op is "negotiate" or "websocket upgrade".
	Op string
	// StatusCode is the HTTP status code.
	StatusCode int
	// Body is the start of the response body.
	Body string
}

// Error implements error.
func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: unexpected status %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// serverCloseError ends a transport because the server sent a Close
// message. It wraps ErrServerClosed.
type serverCloseError struct {
	text           string
	allowReconnect bool
}

// Error reads like the JS client's "Server returned an error on close".
func (e *serverCloseError) Error() string {
	if e.text == "" {
		return ErrServerClosed.Error()
	}
	return "server returned an error on close: " + e.text
}

// Unwrap makes errors.Is(err, ErrServerClosed) hold.
func (e *serverCloseError) Unwrap() error { return ErrServerClosed }
