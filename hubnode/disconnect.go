package hubnode

// DisconnectReason says why a node ended a connection. It is the label of the
// closed-connections metric and the text logged; Message is what the client
// sees in the Close record.
type DisconnectReason string

// Disconnect reasons. They are bounded on purpose: they become metric labels.
const (
	ReasonClientClosed  DisconnectReason = "client_closed"    // the client sent Close or closed the socket
	ReasonClientTimeout DisconnectReason = "client_timeout"   // nothing read for ClientTimeout
	ReasonHandshake     DisconnectReason = "handshake_failed" // bad, unsupported or missing handshake
	ReasonProtocolError DisconnectReason = "protocol_error"   // malformed or invalid message
	ReasonMessageTooBig DisconnectReason = "message_too_big"  // hub message above MaxMessageSize, or WebSocket message above MaxFrameSize
	ReasonSlowConsumer  DisconnectReason = "slow_consumer"    // send queue full
	ReasonWriteError    DisconnectReason = "write_error"      // socket write failed or timed out
	ReasonShutdown      DisconnectReason = "shutdown"         // node draining or stopping
	ReasonServerRequest DisconnectReason = "server_request"   // closed by the application (any node)
	ReasonAuthExpired   DisconnectReason = "auth_expired"     // credentials expired
	ReasonInternal      DisconnectReason = "internal_error"   // the node failed to set the connection up
)

// Message is the text sent in the Close record for this reason ("" = none).
func (r DisconnectReason) Message() string {
	switch r {
	case ReasonClientTimeout:
		return "Server timeout elapsed without receiving a message from the client."
	case ReasonProtocolError:
		return "Connection closed with an error: invalid message."
	case ReasonMessageTooBig:
		return "Connection closed with an error: message exceeds the maximum size."
	case ReasonSlowConsumer:
		return "Connection closed: the client is not reading its messages fast enough."
	case ReasonShutdown:
		return "Server is shutting down."
	case ReasonServerRequest:
		return "Connection closed by the server."
	case ReasonAuthExpired:
		return "Authentication expired."
	case ReasonInternal:
		return "Connection closed with an error."
	}
	return ""
}

// AllowReconnect reports whether the client should reconnect after this
// reason: yes when the cause is the server's (drain, slowness, internal), no
// when the client misbehaved.
func (r DisconnectReason) AllowReconnect() bool {
	switch r {
	case ReasonShutdown, ReasonSlowConsumer, ReasonServerRequest, ReasonInternal, ReasonAuthExpired, ReasonClientTimeout:
		return true
	}
	return false
}
