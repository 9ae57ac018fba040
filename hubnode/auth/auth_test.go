package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var now = time.Unix(1_800_000_000, 0)

func clock() time.Time { return now }

func TestHS256(t *testing.T) {
	v, err := New(Config{HS256Secret: []byte("k"), Audience: "hubfarm", Issuer: "iss", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(c jwt.MapClaims, key []byte) string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
		return s
	}
	good := jwt.MapClaims{"sub": "alice", "aud": "hubfarm", "iss": "iss", "exp": now.Add(time.Hour).Unix(), "role": "admin"}
	c, err := v.Verify(sign(good, []byte("k")))
	if err != nil || c.Subject != "alice" || !c.IsAdmin() {
		t.Fatalf("good token: %+v %v", c, err)
	}
	cases := map[string]string{
		"wrong key":      sign(good, []byte("other")),
		"expired":        sign(jwt.MapClaims{"sub": "a", "aud": "hubfarm", "iss": "iss", "exp": now.Add(-time.Hour).Unix()}, []byte("k")),
		"no exp":         sign(jwt.MapClaims{"sub": "a", "aud": "hubfarm", "iss": "iss"}, []byte("k")),
		"not yet valid":  sign(jwt.MapClaims{"sub": "a", "aud": "hubfarm", "iss": "iss", "exp": now.Add(2 * time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()}, []byte("k")),
		"wrong audience": sign(jwt.MapClaims{"sub": "a", "aud": "other", "iss": "iss", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
		"wrong issuer":   sign(jwt.MapClaims{"sub": "a", "aud": "hubfarm", "iss": "evil", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
		"no subject":     sign(jwt.MapClaims{"aud": "hubfarm", "iss": "iss", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
		"garbage":        "a.b.c",
		"alg none":       "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
	}
	for name, tok := range cases {
		if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMintAndRequestToken(t *testing.T) {
	tok, err := Mint([]byte("k"), "bob", []string{"admin"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := New(Config{HS256Secret: []byte("k"), Now: clock})
	r := httptest.NewRequest("GET", "/hubs/agent?access_token="+tok, nil)
	c, err := v.Authenticate(r)
	if err != nil || c.Subject != "bob" || !c.IsAdmin() {
		t.Fatalf("query token: %+v %v", c, err)
	}
	r = httptest.NewRequest("POST", "/hubs/agent/negotiate", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if c, err = v.Authenticate(r); err != nil || c.Subject != "bob" {
		t.Fatalf("header token: %+v %v", c, err)
	}
	r = httptest.NewRequest("POST", "/", nil)
	if _, err := v.Authenticate(r); !errors.Is(err, ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
}

func TestRS256PEMAndES256JWKS(t *testing.T) {
	dir := t.TempDir()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	pemPath := filepath.Join(dir, "rsa1.pem")
	_ = os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)

	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "kid": "ec1", "crv": "P-256", "use": "sig",
		"x": enc(ek.PublicKey.X.FillBytes(make([]byte, 32))), "y": enc(ek.PublicKey.Y.FillBytes(make([]byte, 32))),
	}}})
	jwksPath := filepath.Join(dir, "jwks.json")
	_ = os.WriteFile(jwksPath, jwks, 0o600)

	v, err := New(Config{PublicKeyFiles: []string{pemPath}, JWKSFile: jwksPath, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "carol", "exp": now.Add(time.Hour).Unix()}
	rt := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	rt.Header["kid"] = "rsa1"
	rs, _ := rt.SignedString(rk)
	if c, err := v.Verify(rs); err != nil || c.Subject != "carol" {
		t.Fatalf("RS256: %+v %v", c, err)
	}
	et := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	et.Header["kid"] = "ec1"
	es, _ := et.SignedString(ek)
	if c, err := v.Verify(es); err != nil || c.Subject != "carol" {
		t.Fatalf("ES256: %+v %v", c, err)
	}
	// An HS256 token is refused when only public keys are configured
	// (no algorithm confusion).
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(der)
	if _, err := v.Verify(hs); err == nil {
		t.Fatal("HS256 token accepted by a public-key verifier")
	}
	et.Header["kid"] = "unknown"
	es2, _ := et.SignedString(ek)
	if _, err := v.Verify(es2); err == nil {
		t.Fatal("unknown kid accepted")
	}
}
