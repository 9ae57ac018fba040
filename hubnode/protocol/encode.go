package protocol

import (
	"encoding/json"
	"strconv"
)

// The encoders append one complete record, separator included, to buf and
// return the extended slice. They write ASP.NET Core's field order (type,
// headers, then the rest) and never allocate beyond growing buf, so a
// broadcast is serialised once into a pooled buffer and written to every
// member as the same bytes.

// AppendInvocation appends an Invocation. invocationID may be empty (a
// non-blocking call, the form used for server callbacks). args must be a JSON
// array literal such as `[{"a":1}]`; nil writes `[]`.
func AppendInvocation(buf []byte, invocationID, target string, args []byte) []byte {
	buf = append(buf, `{"type":1`...)
	if invocationID != "" {
		buf = append(buf, `,"invocationId":`...)
		buf = appendString(buf, invocationID)
	}
	buf = append(buf, `,"target":`...)
	buf = appendString(buf, target)
	buf = append(buf, `,"arguments":`...)
	if len(args) == 0 {
		buf = append(buf, "[]"...)
	} else {
		buf = append(buf, args...)
	}
	return append(buf, '}', RecordSeparator)
}

// AppendStreamInvocation appends a StreamInvocation (used by clients).
func AppendStreamInvocation(buf []byte, invocationID, target string, args []byte) []byte {
	buf = append(buf, `{"type":4,"invocationId":`...)
	buf = appendString(buf, invocationID)
	buf = append(buf, `,"target":`...)
	buf = appendString(buf, target)
	buf = append(buf, `,"arguments":`...)
	if len(args) == 0 {
		buf = append(buf, "[]"...)
	} else {
		buf = append(buf, args...)
	}
	return append(buf, '}', RecordSeparator)
}

// AppendStreamItem appends a StreamItem carrying the JSON value item.
func AppendStreamItem(buf []byte, invocationID string, item []byte) []byte {
	buf = append(buf, `{"type":2,"invocationId":`...)
	buf = appendString(buf, invocationID)
	buf = append(buf, `,"item":`...)
	if len(item) == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, item...)
	}
	return append(buf, '}', RecordSeparator)
}

// AppendCompletion appends a Completion. A nil result is a void completion;
// pass []byte("null") for a method that returned null.
func AppendCompletion(buf []byte, invocationID string, result []byte) []byte {
	buf = append(buf, `{"type":3,"invocationId":`...)
	buf = appendString(buf, invocationID)
	if result != nil {
		buf = append(buf, `,"result":`...)
		buf = append(buf, result...)
	}
	return append(buf, '}', RecordSeparator)
}

// AppendCompletionError appends a Completion carrying an error text.
func AppendCompletionError(buf []byte, invocationID, errText string) []byte {
	buf = append(buf, `{"type":3,"invocationId":`...)
	buf = appendString(buf, invocationID)
	buf = append(buf, `,"error":`...)
	buf = appendString(buf, errText)
	return append(buf, '}', RecordSeparator)
}

// AppendCancelInvocation appends a CancelInvocation (used by clients).
func AppendCancelInvocation(buf []byte, invocationID string) []byte {
	buf = append(buf, `{"type":5,"invocationId":`...)
	buf = appendString(buf, invocationID)
	return append(buf, '}', RecordSeparator)
}

// pingRecord is the only form a Ping ever takes.
var pingRecord = []byte("{\"type\":6}\x1e")

// AppendPing appends a Ping.
func AppendPing(buf []byte) []byte { return append(buf, pingRecord...) }

// AppendClose appends a Close. An empty errText omits the error field.
func AppendClose(buf []byte, errText string, allowReconnect bool) []byte {
	buf = append(buf, `{"type":7`...)
	if errText != "" {
		buf = append(buf, `,"error":`...)
		buf = appendString(buf, errText)
	}
	if allowReconnect {
		buf = append(buf, `,"allowReconnect":true`...)
	}
	return append(buf, '}', RecordSeparator)
}

// AppendAck appends an Ack for sequenceID.
func AppendAck(buf []byte, sequenceID int64) []byte {
	buf = append(buf, `{"type":8,"sequenceId":`...)
	buf = strconv.AppendInt(buf, sequenceID, 10)
	return append(buf, '}', RecordSeparator)
}

// AppendSequence appends a Sequence message for sequenceID.
func AppendSequence(buf []byte, sequenceID int64) []byte {
	buf = append(buf, `{"type":9,"sequenceId":`...)
	buf = strconv.AppendInt(buf, sequenceID, 10)
	return append(buf, '}', RecordSeparator)
}

// AppendMessage appends any message in its canonical form. It is slower than
// the typed encoders and meant for tests and tools.
func AppendMessage(buf []byte, m *Message) []byte {
	switch m.Type {
	case TypeInvocation:
		return AppendInvocation(buf, m.InvocationID, m.Target, joinArgs(m.Arguments))
	case TypeStreamInvocation:
		return AppendStreamInvocation(buf, m.InvocationID, m.Target, joinArgs(m.Arguments))
	case TypeStreamItem:
		return AppendStreamItem(buf, m.InvocationID, m.Item)
	case TypeCompletion:
		if m.HasError {
			return AppendCompletionError(buf, m.InvocationID, m.Error)
		}
		return AppendCompletion(buf, m.InvocationID, m.Result)
	case TypeCancelInvocation:
		return AppendCancelInvocation(buf, m.InvocationID)
	case TypePing:
		return AppendPing(buf)
	case TypeClose:
		return AppendClose(buf, m.Error, m.AllowReconnect)
	case TypeAck:
		return AppendAck(buf, m.SequenceID)
	case TypeSequence:
		return AppendSequence(buf, m.SequenceID)
	}
	buf = append(buf, `{"type":`...)
	buf = strconv.AppendInt(buf, int64(m.Type), 10)
	return append(buf, '}', RecordSeparator)
}

func joinArgs(args []json.RawMessage) []byte {
	out := []byte{'['}
	for i, a := range args {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, a...)
	}
	return append(out, ']')
}

// appendString appends s as a JSON string literal.
func appendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s) // rare: escaping or non-ASCII needs the full encoder
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}
