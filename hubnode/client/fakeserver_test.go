package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

// waitTimeout bounds every wait in these tests; nothing should take long.
const waitTimeout = 10 * time.Second

// fakeServer is a minimal SignalR JSON hub at /hub built on httptest and
// gorilla/websocket: negotiate v1, the WebSocket with id=token (or without id
// for skipNegotiation), the handshake and a few canned hub methods. It
// records what clients sent so tests can check the wire bytes.
type fakeServer struct {
	t   testing.TB
	srv *httptest.Server
	// url is the hub URL, http://127.0.0.1:port/hub.
	url string

	mu            sync.Mutex
	seq           int
	tokens        map[string]string // connection token -> connection id
	negotiateReqs []*http.Request
	upgradeReqs   []*http.Request
	conns         []*fakeConn
	// Knobs, set before clients connect.
	handshakeError string
	// afterHandshake is appended to the handshake reply in the same
	// WebSocket message.
	afterHandshake string
	// refuseNegotiate answers that many negotiates with 503.
	refuseNegotiate int
	// negotiateBody, when set, replaces the negotiate response body.
	negotiateBody func(n int) string
	// quiet stops recording client messages (for benchmarks, which would
	// fill the channels).
	quiet bool
	// sink discards every client message unread after the handshake, so a
	// benchmark measures only the client.
	sink bool

	connCh chan *fakeConn
	wg     sync.WaitGroup
}

// fakeConn is the server side of one WebSocket connection.
type fakeConn struct {
	id  string
	ws  *websocket.Conn
	wmu sync.Mutex
	// frames receives every WebSocket message from the client, raw,
	// starting with the handshake.
	frames chan string
	// msgs receives every decoded hub message from the client.
	msgs chan protocol.Message
	gone chan struct{}
}

func newFakeServer(t testing.TB) *fakeServer {
	t.Helper()
	s := &fakeServer{t: t, tokens: map[string]string{}, connCh: make(chan *fakeConn, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("/hub/negotiate", s.negotiate)
	mux.HandleFunc("/hub", s.upgrade)
	s.srv = httptest.NewServer(mux)
	s.url = s.srv.URL + "/hub"
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) close() {
	s.mu.Lock()
	conns := append([]*fakeConn(nil), s.conns...)
	s.mu.Unlock()
	for _, fc := range conns {
		fc.drop()
	}
	s.srv.Close()
	s.wg.Wait()
}

func cloneRequest(r *http.Request) *http.Request {
	c := r.Clone(r.Context())
	c.Body = nil
	return c
}

func (s *fakeServer) negotiate(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.negotiateReqs = append(s.negotiateReqs, cloneRequest(r))
	n := len(s.negotiateReqs)
	refuse := s.refuseNegotiate > 0
	if refuse {
		s.refuseNegotiate--
	}
	s.seq++
	id, tok := fmt.Sprintf("cid-%d", s.seq), fmt.Sprintf("tok-%d", s.seq)
	s.tokens[tok] = id
	bodyFn := s.negotiateBody
	s.mu.Unlock()
	switch {
	case r.Method != http.MethodPost:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	case refuse:
		http.Error(w, "try later", http.StatusServiceUnavailable)
	case bodyFn != nil:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(bodyFn(n)))
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"negotiateVersion":1,"connectionId":%q,"connectionToken":%q,"availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}`, id, tok)
	}
}

func (s *fakeServer) upgrade(w http.ResponseWriter, r *http.Request) {
	s.wg.Add(1)
	defer s.wg.Done()
	s.mu.Lock()
	s.upgradeReqs = append(s.upgradeReqs, cloneRequest(r))
	var id string
	if tok := r.URL.Query().Get("id"); tok != "" {
		var ok bool
		if id, ok = s.tokens[tok]; !ok {
			s.mu.Unlock()
			http.Error(w, "No Connection with that ID", http.StatusNotFound)
			return
		}
		delete(s.tokens, tok)
	} else {
		s.seq++
		id = fmt.Sprintf("skip-%d", s.seq)
	}
	hsErr, after, quiet, sink := s.handshakeError, s.afterHandshake, s.quiet, s.sink
	s.mu.Unlock()

	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	fc := &fakeConn{id: id, ws: ws, frames: make(chan string, 4096), msgs: make(chan protocol.Message, 4096), gone: make(chan struct{})}
	defer close(fc.gone)

	_, data, err := ws.ReadMessage()
	if err != nil {
		return
	}
	fc.frames <- string(data)
	if _, _, err := protocol.ParseHandshakeRequest(data); err != nil {
		s.t.Errorf("fake server: bad handshake %q: %v", data, err)
		return
	}
	if hsErr != "" {
		fc.send(string(protocol.AppendHandshakeResponse(nil, hsErr)))
		return
	}
	fc.send(string(protocol.AppendHandshakeResponse(nil, "")) + after)
	s.mu.Lock()
	s.conns = append(s.conns, fc)
	s.mu.Unlock()
	s.connCh <- fc

	for sink {
		_, r, err := ws.NextReader()
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if !quiet {
			fc.frames <- string(data)
		}
		err = protocol.SplitRecords(data, func(rec []byte) error {
			m, err := protocol.DecodeMessage(rec)
			if err != nil {
				return err
			}
			if !quiet {
				fc.msgs <- m
			}
			s.serve(fc, &m)
			return nil
		})
		if err != nil {
			s.t.Errorf("fake server: bad frame %q: %v", data, err)
			return
		}
	}
}

// serve implements the canned hub methods.
func (s *fakeServer) serve(fc *fakeConn, m *protocol.Message) {
	arg := func(i int, v any) {
		if i >= len(m.Arguments) {
			s.t.Errorf("fake server: %s lacks argument %d", m.Target, i)
			return
		}
		if err := json.Unmarshal(m.Arguments[i], v); err != nil {
			s.t.Errorf("fake server: %s argument %d: %v", m.Target, i, err)
		}
	}
	id := m.InvocationID
	switch m.Type {
	case protocol.TypeInvocation:
		if id == "" {
			return // non-blocking: never answer
		}
		switch m.Target {
		case "Add":
			sum := 0
			for i := range m.Arguments {
				var n int
				arg(i, &n)
				sum += n
			}
			fc.send(string(protocol.AppendCompletion(nil, id, []byte(strconv.Itoa(sum)))))
		case "Echo":
			fc.send(string(protocol.AppendCompletion(nil, id, m.Arguments[0])))
		case "Fail":
			fc.send(string(protocol.AppendCompletionError(nil, id, "It didn't work!")))
		case "Void":
			fc.send(string(protocol.AppendCompletion(nil, id, nil)))
		case "Hang":
		case "Push":
			// Push(target, n, batched): n callbacks target(i), then a void
			// completion.
			var target string
			var n int
			var batched bool
			arg(0, &target)
			arg(1, &n)
			arg(2, &batched)
			var frame []byte
			for i := 0; i < n; i++ {
				frame = protocol.AppendInvocation(frame, "", target, []byte("["+strconv.Itoa(i)+"]"))
				if !batched {
					fc.send(string(frame))
					frame = frame[:0]
				}
			}
			fc.send(string(protocol.AppendCompletion(frame, id, nil)))
		case "CloseMe":
			// CloseMe(text, allowReconnect): a server Close, then the close
			// handshake.
			var text string
			var allow bool
			arg(0, &text)
			arg(1, &allow)
			fc.send(string(protocol.AppendClose(nil, text, allow)))
			fc.wmu.Lock()
			_ = fc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			fc.wmu.Unlock()
		default:
			fc.send(string(protocol.AppendCompletionError(nil, id, "Failed to invoke '"+m.Target+"' due to an error on the server.")))
		}
	case protocol.TypeStreamInvocation:
		switch m.Target {
		case "Counter":
			var n int
			arg(0, &n)
			for i := 0; i < n; i++ {
				fc.send(string(protocol.AppendStreamItem(nil, id, []byte(strconv.Itoa(i)))))
			}
			fc.send(string(protocol.AppendCompletion(nil, id, nil)))
		case "FailStream":
			fc.send(string(protocol.AppendStreamItem(nil, id, []byte(`"x"`))))
			fc.send(string(protocol.AppendCompletionError(nil, id, "An error occurred on the server while streaming results.")))
		case "Forever":
			fc.send(string(protocol.AppendStreamItem(nil, id, []byte("0"))))
		}
	case protocol.TypeCancelInvocation:
		// ASP.NET Core still completes a cancelled stream.
		fc.send(string(protocol.AppendCompletion(nil, id, nil)))
	}
}

func (fc *fakeConn) send(frame string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = fc.ws.WriteMessage(websocket.TextMessage, []byte(frame))
}

// drop closes the TCP connection without a close handshake.
func (fc *fakeConn) drop() { _ = fc.ws.NetConn().Close() }

// nextConn waits for the next connection that completed the handshake.
func (s *fakeServer) nextConn(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-s.connCh:
		return fc
	case <-time.After(waitTimeout):
		t.Fatal("no connection reached the fake server")
		return nil
	}
}

func (s *fakeServer) negotiations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.negotiateReqs)
}

// waitMsg returns the next message from the client matching pred, skipping
// others (Pings, for instance).
func (fc *fakeConn) waitMsg(t *testing.T, what string, pred func(m protocol.Message) bool) protocol.Message {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case m := <-fc.msgs:
			if pred(m) {
				return m
			}
		case <-deadline.C:
			t.Fatalf("fake server never received %s", what)
			return protocol.Message{}
		}
	}
}

// waitFrame returns the next raw frame from the client containing substr.
func (fc *fakeConn) waitFrame(t *testing.T, substr string) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case f := <-fc.frames:
			if strings.Contains(f, substr) {
				return f
			}
		case <-deadline.C:
			t.Fatalf("fake server never received a frame containing %q", substr)
			return ""
		}
	}
}

func isType(typ protocol.MessageType) func(protocol.Message) bool {
	return func(m protocol.Message) bool { return m.Type == typ }
}
