package hubnode_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/hubnode"
)

// sizeNode starts a lone node whose hub has "Len", returning the length of
// its string argument, with MaxMessageSize 4 KiB and maxFrame as
// MaxFrameSize (0: the default).
func sizeNode(t *testing.T, maxFrame int64) string {
	t.Helper()
	_, url := startLoneNode(t, hubnode.Config{MaxMessageSize: 4 << 10, MaxFrameSize: maxFrame,
		InvocationRate: 1e6, InvocationBurst: 1e6},
		func(_ *hubnode.Node, hub *hubnode.Hub) {
			hub.Method("Len", func(_ *hubnode.Call, s string) (int, error) { return len(s), nil })
		})
	return url
}

// rawDial opens a WebSocket to the hub without negotiating; with handshake
// it also sends the handshake and reads the reply.
func rawDial(t *testing.T, url string, handshake bool) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if handshake {
		if err := ws.WriteMessage(websocket.TextMessage, []byte("{\"protocol\":\"json\",\"version\":1}\x1e")); err != nil {
			t.Fatal(err)
		}
		_, reply, err := ws.ReadMessage()
		if err != nil || string(reply) != "{}\x1e" {
			t.Fatalf("handshake reply %q, %v", reply, err)
		}
	}
	return ws
}

// lenCall is an Invocation record of Len with an argument of n bytes.
func lenCall(id string, n int) string {
	return fmt.Sprintf("{\"type\":1,\"invocationId\":%q,\"target\":\"Len\",\"arguments\":[%q]}\x1e", id, strings.Repeat("a", n))
}

// readRecords reads records until the server closes the connection and
// returns them with the close error.
func readRecords(t *testing.T, ws *websocket.Conn) ([]map[string]any, error) {
	t.Helper()
	var recs []map[string]any
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return recs, err
		}
		for _, r := range bytes.Split(bytes.TrimSuffix(msg, []byte{0x1e}), []byte{0x1e}) {
			var m map[string]any
			if err := json.Unmarshal(r, &m); err != nil {
				t.Fatalf("record %q: %v", r, err)
			}
			recs = append(recs, m)
		}
	}
}

// closeRecord returns the Close record among recs, failing without one.
func closeRecord(t *testing.T, recs []map[string]any) map[string]any {
	t.Helper()
	for _, r := range recs {
		if r["type"] == float64(7) {
			return r
		}
	}
	t.Fatalf("no Close record in %v", recs)
	return nil
}

// TestSeveralMessagesInOneWebSocketMessage: MaxMessageSize applies to each
// hub message, not to the WebSocket message carrying them: calls of 3 KiB
// each, sent together in one WebSocket message of 12 KiB (as the JS client
// sends the calls it queued), all complete under a 4 KiB limit.
func TestSeveralMessagesInOneWebSocketMessage(t *testing.T) {
	url := sizeNode(t, 0)
	ws := rawDial(t, url, true)
	var batch strings.Builder
	const calls = 4
	for i := range calls {
		batch.WriteString(lenCall(fmt.Sprint(i), 3<<10))
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(batch.String())); err != nil {
		t.Fatal(err)
	}
	done := map[string]bool{}
	for len(done) < calls {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d completions: %v", len(done), err)
		}
		for _, r := range bytes.Split(bytes.TrimSuffix(msg, []byte{0x1e}), []byte{0x1e}) {
			var m struct {
				Type         int
				InvocationID string
				Result       int
				Error        string
			}
			if err := json.Unmarshal(r, &m); err != nil {
				t.Fatal(err)
			}
			switch m.Type {
			case 3:
				if m.Error != "" || m.Result != 3<<10 {
					t.Fatalf("completion %+v", m)
				}
				done[m.InvocationID] = true
			case 6:
			default:
				t.Fatalf("unexpected record %s", r)
			}
		}
	}
	// A record exactly at the limit is accepted too.
	exact := lenCall("x", 0)
	exact = lenCall("x", 4<<10-(len(exact)-1))
	if len(exact)-1 != 4<<10 {
		t.Fatalf("test record is %d bytes", len(exact)-1)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(exact)); err != nil {
		t.Fatal(err)
	}
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("a record of exactly MaxMessageSize: %v", err)
		}
		if bytes.Contains(msg, []byte(`"invocationId":"x"`)) {
			if !bytes.Contains(msg, []byte(`"result":`)) {
				t.Fatalf("a record of exactly MaxMessageSize: %q", msg)
			}
			break
		}
	}
}

// TestMessageOverTheLimit: one hub message over MaxMessageSize, even
// inside a small WebSocket message, closes the connection with a Close
// record that names the sizes and does not invite a reconnect, then a
// normal WebSocket close.
func TestMessageOverTheLimit(t *testing.T) {
	url := sizeNode(t, 0)
	ws := rawDial(t, url, true)
	big := lenCall("2", 5<<10)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(lenCall("1", 10)+big)); err != nil {
		t.Fatal(err)
	}
	recs, err := readRecords(t, ws)
	c := closeRecord(t, recs)
	want := fmt.Sprintf("message too big: %d bytes, limit %d", len(big)-1, 4<<10)
	if e, _ := c["error"].(string); !strings.Contains(e, want) {
		t.Fatalf("Close error %q, want it to contain %q", e, want)
	}
	if c["allowReconnect"] == true {
		t.Fatalf("Close %v invites a reconnect", c)
	}
	if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("WebSocket closed with %v, want a normal close after the Close record", err)
	}

	// Bytes after the last separator count too: an unterminated record over
	// the limit is too big, not merely incomplete.
	ws = rawDial(t, url, true)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(strings.TrimSuffix(big, "\x1e"))); err != nil {
		t.Fatal(err)
	}
	recs, _ = readRecords(t, ws)
	if e, _ := closeRecord(t, recs)["error"].(string); !strings.Contains(e, want) {
		t.Fatalf("Close error %q, want it to contain %q", e, want)
	}
}

// TestWebSocketMessageOverTheFrameLimit: a WebSocket message over
// MaxFrameSize closes the connection with a Close record saying so, even
// though each hub message in it is small; none of its calls runs.
func TestWebSocketMessageOverTheFrameLimit(t *testing.T) {
	const frame = 64 << 10
	url := sizeNode(t, frame)
	ws := rawDial(t, url, true)
	var batch strings.Builder
	for i := 0; batch.Len() <= 2*frame; i++ {
		batch.WriteString(lenCall(fmt.Sprint(i), 1<<10))
	}
	// The node closes while the client may still be writing: a write
	// error is fine, what the client reads is what counts.
	go func() { _ = ws.WriteMessage(websocket.TextMessage, []byte(batch.String())) }()
	recs, _ := readRecords(t, ws)
	want := fmt.Sprintf("WebSocket message too big: more than %d bytes, limit %d", frame, frame)
	if e, _ := closeRecord(t, recs)["error"].(string); !strings.Contains(e, want) {
		t.Fatalf("Close error %q, want it to contain %q", e, want)
	}
	for _, r := range recs {
		if r["type"] == float64(3) {
			t.Fatalf("a call of the refused WebSocket message ran: %v", r)
		}
	}
}

// TestHandshakeOverTheLimit: a handshake larger than MaxMessageSize is
// refused with a handshake error saying so.
func TestHandshakeOverTheLimit(t *testing.T) {
	url := sizeNode(t, 0)
	ws := rawDial(t, url, false)
	hs := fmt.Sprintf("{\"protocol\":\"json\",\"version\":1,\"pad\":%q}\x1e", strings.Repeat("p", 5<<10))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(hs)); err != nil {
		t.Fatal(err)
	}
	_, reply, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"error":"Handshake was canceled: message too big: %d bytes, limit %d"}`+"\x1e", len(hs)-1, 4<<10)
	if string(reply) != want {
		t.Fatalf("handshake reply %q, want %q", reply, want)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after the refused handshake: %v, want a normal close", err)
	}
}

// TestFrameSizeConfig: MaxFrameSize defaults to four times MaxMessageSize,
// at least 1 MiB, and must exceed MaxMessageSize.
func TestFrameSizeConfig(t *testing.T) {
	for _, c := range []struct{ msg, frame, want int64 }{
		{0, 0, 1 << 20},                 // 100 KiB messages: 1 MiB
		{1 << 20, 0, 4 << 20},           // 1 MiB messages: 4 MiB
		{4 << 10, 8 << 10, 8 << 10},     // as set
		{4 << 10, 4 << 10, -1},          // not above MaxMessageSize
		{4 << 10, 4<<10 + 1, 4<<10 + 1}, // one byte above: room for the separator
	} {
		n, err := hubnode.New(hubnode.Config{NodeID: "n", TokenSecret: []byte("s"), MaxMessageSize: c.msg, MaxFrameSize: c.frame}, nil)
		if c.want < 0 {
			if err == nil {
				t.Errorf("MaxMessageSize %d, MaxFrameSize %d: accepted", c.msg, c.frame)
			}
			continue
		}
		if err != nil {
			t.Errorf("MaxMessageSize %d, MaxFrameSize %d: %v", c.msg, c.frame, err)
			continue
		}
		if got := n.Config().MaxFrameSize; got != c.want {
			t.Errorf("MaxMessageSize %d, MaxFrameSize %d: effective %d, want %d", c.msg, c.frame, got, c.want)
		}
	}
}
