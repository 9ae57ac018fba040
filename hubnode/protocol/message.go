// Package protocol implements the ASP.NET Core SignalR JSON hub protocol: the
// handshake, the nine message types and the 0x1E record framing.
//
// The package is pure: it does no I/O and imports nothing outside the standard
// library, so it can be fuzzed in isolation. Decoding is tolerant in the ways
// the official clients require (any field order, unknown fields and headers
// ignored) and strict where the specification is (a Completion carries a result
// or an error, never both; an Invocation has a target and an arguments array).
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
)

// RecordSeparator ends every JSON hub protocol record (handshake included).
const RecordSeparator byte = 0x1E

// MessageType is the numeric "type" field of a hub message.
type MessageType int

// The hub message types of the SignalR hub protocol.
const (
	TypeInvocation       MessageType = 1
	TypeStreamItem       MessageType = 2
	TypeCompletion       MessageType = 3
	TypeStreamInvocation MessageType = 4
	TypeCancelInvocation MessageType = 5
	TypePing             MessageType = 6
	TypeClose            MessageType = 7
	TypeAck              MessageType = 8
	TypeSequence         MessageType = 9
)

// String returns the specification's name of the message type.
func (t MessageType) String() string {
	switch t {
	case TypeInvocation:
		return "Invocation"
	case TypeStreamItem:
		return "StreamItem"
	case TypeCompletion:
		return "Completion"
	case TypeStreamInvocation:
		return "StreamInvocation"
	case TypeCancelInvocation:
		return "CancelInvocation"
	case TypePing:
		return "Ping"
	case TypeClose:
		return "Close"
	case TypeAck:
		return "Ack"
	case TypeSequence:
		return "Sequence"
	}
	return fmt.Sprintf("MessageType(%d)", int(t))
}

// Message is one hub protocol message of any type. Only the fields that belong
// to Type are meaningful; Decode guarantees the required ones are present.
//
// Arguments, Item and Result hold raw JSON so that the receiver binds them to
// the types of the method it dispatches to. A nil Result means "no result"
// (a void Completion); the JSON literal null is a present, null result.
type Message struct {
	Type           MessageType
	Headers        map[string]string
	InvocationID   string
	Target         string
	Arguments      []json.RawMessage
	StreamIDs      []string
	Item           json.RawMessage
	Result         json.RawMessage
	Error          string
	HasError       bool
	AllowReconnect bool
	SequenceID     int64
}

// ErrProtocol is wrapped by every decoding error caused by the peer's bytes,
// so callers can tell a misbehaving client from an internal failure.
var ErrProtocol = errors.New("signalr protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// wireMessage mirrors the JSON shape; pointer fields tell "absent" from zero.
type wireMessage struct {
	Type           *int               `json:"type"`
	Headers        map[string]string  `json:"headers"`
	InvocationID   *string            `json:"invocationId"`
	Target         *string            `json:"target"`
	Arguments      *[]json.RawMessage `json:"arguments"`
	StreamIDs      []string           `json:"streamIds"`
	Item           json.RawMessage    `json:"item"`
	Result         json.RawMessage    `json:"result"`
	Error          *string            `json:"error"`
	AllowReconnect *bool              `json:"allowReconnect"`
	SequenceID     *int64             `json:"sequenceId"`
}

// DecodeMessage parses one record (without its trailing separator) and checks
// the fields its type requires. Unknown message types are returned with only
// Type set so the caller can ignore them, as the specification asks.
func DecodeMessage(record []byte) (Message, error) {
	var w wireMessage
	if err := json.Unmarshal(record, &w); err != nil {
		return Message{}, protoErr("malformed message: %v", err)
	}
	if w.Type == nil {
		return Message{}, protoErr("missing required property 'type'")
	}
	m := Message{Type: MessageType(*w.Type), Headers: w.Headers}
	needID := func() error {
		if w.InvocationID == nil || *w.InvocationID == "" {
			return protoErr("missing required property 'invocationId' in %s", m.Type)
		}
		m.InvocationID = *w.InvocationID
		return nil
	}
	switch m.Type {
	case TypeInvocation, TypeStreamInvocation:
		if w.Target == nil || *w.Target == "" {
			return Message{}, protoErr("missing required property 'target' in %s", m.Type)
		}
		if w.Arguments == nil {
			return Message{}, protoErr("missing required property 'arguments' in %s", m.Type)
		}
		if m.Type == TypeStreamInvocation {
			if err := needID(); err != nil {
				return Message{}, err
			}
		} else if w.InvocationID != nil {
			m.InvocationID = *w.InvocationID
		}
		m.Target = *w.Target
		m.Arguments = *w.Arguments
		m.StreamIDs = w.StreamIDs
	case TypeStreamItem:
		if err := needID(); err != nil {
			return Message{}, err
		}
		if w.Item == nil {
			return Message{}, protoErr("missing required property 'item' in StreamItem")
		}
		m.Item = w.Item
	case TypeCompletion:
		if err := needID(); err != nil {
			return Message{}, err
		}
		if w.Error != nil && w.Result != nil {
			return Message{}, protoErr("the 'error' and 'result' properties are mutually exclusive")
		}
		if w.Error != nil {
			m.Error, m.HasError = *w.Error, true
		}
		m.Result = w.Result
	case TypeCancelInvocation:
		if err := needID(); err != nil {
			return Message{}, err
		}
	case TypePing:
	case TypeClose:
		if w.Error != nil {
			m.Error, m.HasError = *w.Error, true
		}
		if w.AllowReconnect != nil {
			m.AllowReconnect = *w.AllowReconnect
		}
	case TypeAck, TypeSequence:
		if w.SequenceID == nil {
			return Message{}, protoErr("missing required property 'sequenceId' in %s", m.Type)
		}
		m.SequenceID = *w.SequenceID
	default:
		// Unknown types are skipped by receivers (forward compatibility).
	}
	return m, nil
}

// SplitRecords calls fn for every complete record in frame, without the
// separator. A frame must end with a separator: a record is never split
// across WebSocket messages, so trailing bytes are a protocol error.
func SplitRecords(frame []byte, fn func(record []byte) error) error {
	for len(frame) > 0 {
		i := indexRS(frame)
		if i < 0 {
			return protoErr("message is incomplete: missing record separator")
		}
		if err := fn(frame[:i]); err != nil {
			return err
		}
		frame = frame[i+1:]
	}
	return nil
}

func indexRS(b []byte) int {
	for i, c := range b {
		if c == RecordSeparator {
			return i
		}
	}
	return -1
}
