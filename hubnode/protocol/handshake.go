package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// HandshakeRequest is the first record a client sends.
type HandshakeRequest struct {
	Protocol string `json:"protocol"`
	Version  int    `json:"version"`
}

// MaxHandshakeVersion is the highest hub protocol version the server accepts
// (ASP.NET Core accepts any version up to 2 for both protocols).
const MaxHandshakeVersion = 2

// ParseHandshakeRequest reads the handshake record from the start of data and
// returns it with the bytes after its separator (which may already hold hub
// messages). It returns an error wrapping ErrProtocol for anything that is not
// a well-formed handshake; ValidateHandshake checks the values.
func ParseHandshakeRequest(data []byte) (HandshakeRequest, []byte, error) {
	i := indexRS(data)
	if i < 0 {
		return HandshakeRequest{}, nil, protoErr("handshake is incomplete: missing record separator")
	}
	var raw struct {
		Protocol *string `json:"protocol"`
		Version  *int    `json:"version"`
	}
	if err := json.Unmarshal(data[:i], &raw); err != nil {
		return HandshakeRequest{}, nil, protoErr("malformed handshake: %v", err)
	}
	if raw.Protocol == nil {
		return HandshakeRequest{}, nil, protoErr("missing required property 'protocol' in handshake")
	}
	if raw.Version == nil {
		return HandshakeRequest{}, nil, protoErr("missing required property 'version' in handshake")
	}
	return HandshakeRequest{Protocol: *raw.Protocol, Version: *raw.Version}, data[i+1:], nil
}

// ValidateHandshake returns the text of the error a server sends back for an
// unsupported handshake, or "" when the server can serve it. Only the JSON
// protocol is supported.
func ValidateHandshake(h HandshakeRequest) string {
	if h.Protocol != "json" {
		return fmt.Sprintf("The protocol '%s' is not supported.", h.Protocol)
	}
	if h.Version < 0 || h.Version > MaxHandshakeVersion {
		return fmt.Sprintf("The server does not support version %d of the '%s' protocol.", h.Version, h.Protocol)
	}
	return ""
}

// AppendHandshakeResponse appends the server's handshake reply: `{}` on
// success, `{"error":"..."}` otherwise.
func AppendHandshakeResponse(buf []byte, errText string) []byte {
	if errText == "" {
		return append(buf, '{', '}', RecordSeparator)
	}
	buf = append(buf, `{"error":`...)
	buf = appendString(buf, errText)
	return append(buf, '}', RecordSeparator)
}

// AppendHandshakeRequest appends a client handshake for the JSON protocol.
func AppendHandshakeRequest(buf []byte, version int) []byte {
	return fmt.Appendf(buf, `{"protocol":"json","version":%d}%c`, version, RecordSeparator)
}

// ParseHandshakeResponse reads the server's reply from the start of data and
// returns its error text (empty on success) and the remaining bytes.
func ParseHandshakeResponse(data []byte) (errText string, rest []byte, err error) {
	i := indexRS(data)
	if i < 0 {
		return "", nil, protoErr("handshake response is incomplete")
	}
	// encoding/json accepts the literal null for a struct and leaves it
	// untouched, which would read as a successful reply; the JS client fails
	// on anything but an object.
	if body := bytes.TrimLeft(data[:i], " \t\r\n"); len(body) > 0 && body[0] != '{' {
		return "", nil, protoErr("malformed handshake response: not a JSON object")
	}
	var raw struct {
		Error *string          `json:"error"`
		Type  *json.RawMessage `json:"type"`
	}
	if err := json.Unmarshal(data[:i], &raw); err != nil {
		return "", nil, protoErr("malformed handshake response: %v", err)
	}
	if raw.Type != nil {
		return "", nil, protoErr("expected a handshake response from the server")
	}
	if raw.Error != nil {
		return *raw.Error, data[i+1:], nil
	}
	return "", data[i+1:], nil
}
