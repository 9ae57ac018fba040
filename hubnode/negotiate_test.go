package hubnode

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConnectionTokens(t *testing.T) {
	secret := []byte("s3cret")
	now := time.Unix(1_700_000_000, 0)
	tok := signToken(secret, connectionToken{ConnID: "c1", User: "alice", Expires: now.Add(time.Minute).Unix()})
	if strings.ContainsAny(tok, "+/=?&") {
		t.Fatalf("token %q is not URL-safe", tok)
	}
	got, err := verifyToken(secret, tok, now)
	if err != nil || got.ConnID != "c1" || got.User != "alice" {
		t.Fatalf("verify = %+v, %v", got, err)
	}
	if _, err := verifyToken([]byte("other"), tok, now); !errors.Is(err, errTokenInvalid) {
		t.Fatalf("token signed with another secret: %v", err)
	}
	if _, err := verifyToken(secret, tok, now.Add(2*time.Minute)); !errors.Is(err, errTokenExpired) {
		t.Fatalf("expired token: %v", err)
	}
	// Changing the bound user invalidates the signature.
	parts := strings.Split(tok, ".")
	forged := signToken([]byte("x"), connectionToken{ConnID: "c1", User: "mallory", Expires: now.Add(time.Minute).Unix()})
	fp := strings.Split(forged, ".")
	if _, err := verifyToken(secret, parts[0]+"."+fp[1]+"."+parts[2], now); !errors.Is(err, errTokenInvalid) {
		t.Fatalf("token with a swapped payload: %v", err)
	}
	for _, bad := range []string{"", "1", "1.a.b", "2." + parts[1] + "." + parts[2], "1.!!!." + parts[2]} {
		if _, err := verifyToken(secret, bad, now); err == nil {
			t.Errorf("verify(%q) succeeded", bad)
		}
	}
}

func TestEncodeInvocationRawFastPath(t *testing.T) {
	fast, err := EncodeInvocation("ReceiveSessionMessage", json.RawMessage(`{"eventId":"1-0","content":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	slow, _ := EncodeInvocation("ReceiveSessionMessage", struct {
		EventID string `json:"eventId"`
		Content string `json:"content"`
	}{"1-0", "hi"})
	if string(fast) != string(slow) {
		t.Fatalf("fast path %q != general path %q", fast, slow)
	}
}
