package testredis

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// FreezeProxy forwards TCP connections to a Redis server and can freeze
// those that subscribed: they stay open but nothing passes any more, like a
// half-open connection whose peer vanished. Fault tests use it to show that a
// silently dead subscriber is detected.
type FreezeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxyConn
	wg     sync.WaitGroup
	closed chan struct{}
}

type proxyConn struct {
	client, server net.Conn
	subscriber     atomic.Bool
	frozen         chan struct{} // closed when frozen
	freezeOnce     sync.Once
}

// StartFreezeProxy listens on a free loopback port and forwards to target
// until the test ends.
func StartFreezeProxy(t testing.TB, target string) *FreezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FreezeProxy{ln: ln, target: target, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients dial instead of the server's.
func (p *FreezeProxy) Addr() string { return p.ln.Addr().String() }

func (p *FreezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s, frozen: make(chan struct{})}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pc, c, s, true)
		go p.pipe(pc, s, c, false)
	}
}

func (p *FreezeProxy) pipe(pc *proxyConn, from, to net.Conn, upstream bool) {
	defer p.wg.Done()
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			if upstream && bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
				pc.subscriber.Store(true)
			}
			select {
			case <-pc.frozen: // swallow everything, like a dead path
				select {
				case <-p.closed:
					return
				default:
				}
				continue
			default:
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
}

// FreezeSubscribers freezes every connection that has sent a SUBSCRIBE.
func (p *FreezeProxy) FreezeSubscribers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		if pc.subscriber.Load() {
			pc.freezeOnce.Do(func() { close(pc.frozen) })
		}
	}
}

func (p *FreezeProxy) close() {
	close(p.closed)
	p.ln.Close()
	p.mu.Lock()
	for _, pc := range p.conns {
		pc.client.Close()
		pc.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
