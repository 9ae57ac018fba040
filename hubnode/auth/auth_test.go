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
	"strings"
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
		"long subject":   sign(jwt.MapClaims{"sub": strings.Repeat("a", MaxSubjectLength+1), "aud": "hubfarm", "iss": "iss", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
		"control chars":  sign(jwt.MapClaims{"sub": "alice\nlevel=ERROR", "aud": "hubfarm", "iss": "iss", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
		"no issuer":      sign(jwt.MapClaims{"sub": "a", "aud": "hubfarm", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
		"no audience":    sign(jwt.MapClaims{"sub": "a", "iss": "iss", "exp": now.Add(time.Hour).Unix()}, []byte("k")),
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
	tok, err := Mint([]byte("k"), Grant{Subject: "bob", Roles: []string{"admin"}, TTL: time.Hour, Now: now})
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

// TestHS256Rotation: during a rotation both the new secret and the
// previous one verify tokens; a secret that is neither is refused, and a
// previous secret alone is a configuration error.
func TestHS256Rotation(t *testing.T) {
	v, err := New(Config{HS256Secret: []byte("new"), PreviousHS256Secrets: [][]byte{[]byte("old")}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"new", "old"} {
		tok, err := Mint([]byte(secret), Grant{Subject: "alice", TTL: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := v.Verify(tok); err != nil || c.Subject != "alice" {
			t.Errorf("token signed with the %s secret: %+v %v", secret, c, err)
		}
	}
	tok, _ := Mint([]byte("other"), Grant{Subject: "alice", TTL: time.Hour, Now: now})
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("token signed with an unknown secret: %v", err)
	}
	if _, err := New(Config{PreviousHS256Secrets: [][]byte{[]byte("old")}}); err == nil {
		t.Error("a previous secret without a current one was accepted")
	}
}

// TestMintGrant: a minted token carries iss and aud when asked, so it
// passes a verifier that requires them; a bad subject or validity is
// refused at minting.
func TestMintGrant(t *testing.T) {
	v, _ := New(Config{HS256Secret: []byte("k"), Issuer: "me", Audience: "hubfarm", Now: clock})
	tok, err := Mint([]byte("k"), Grant{Subject: "dana", Roles: []string{"admin", "ops"}, Issuer: "me", Audience: "hubfarm", TTL: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil || c.Subject != "dana" || !c.IsAdmin() || len(c.Roles) != 2 || !c.Expires.Equal(now.Add(time.Minute)) {
		t.Fatalf("minted token: %+v %v", c, err)
	}
	plain, _ := Mint([]byte("k"), Grant{Subject: "dana", TTL: time.Minute, Now: now})
	if _, err := v.Verify(plain); err == nil {
		t.Error("a token without iss and aud passed a verifier requiring them")
	}
	for name, g := range map[string]Grant{
		"no subject":   {TTL: time.Minute},
		"long subject": {Subject: strings.Repeat("x", MaxSubjectLength+1), TTL: time.Minute},
		"no validity":  {Subject: "dana"},
	} {
		if _, err := Mint([]byte("k"), g); err == nil {
			t.Errorf("%s: minted", name)
		}
	}
}

// TestPublicKeyRotationWithoutKid: with two RSA keys configured, a token
// without kid verifies against either (an issuer that omits kid keeps
// working while the old and the new key are both configured); a token
// whose kid names the other key does not.
func TestPublicKeyRotationWithoutKid(t *testing.T) {
	dir := t.TempDir()
	var keys []*rsa.PrivateKey
	var files []string
	for _, name := range []string{"old", "new"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		path := filepath.Join(dir, name+".pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		keys, files = append(keys, k), append(files, path)
	}
	v, err := New(Config{PublicKeyFiles: files, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "erin", "exp": now.Add(time.Hour).Unix()}
	for i, k := range keys {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(k)
		if c, err := v.Verify(tok); err != nil || c.Subject != "erin" {
			t.Errorf("key %d without kid: %+v %v", i, c, err)
		}
	}
	wrong := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	wrong.Header["kid"] = "new"
	tok, _ := wrong.SignedString(keys[0])
	if _, err := v.Verify(tok); err == nil {
		t.Error("a token signed with the old key but naming the new one was accepted")
	}
	// An ES256 token is refused: no EC key is configured.
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ek)
	if _, err := v.Verify(es); err == nil {
		t.Error("ES256 token accepted with only RSA keys")
	}
}

// TestKeyFilesRefused: keys that must not verify anything are refused when
// the verifier is built, not at the first token.
func TestKeyFilesRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ := x509.MarshalPKIXPublicKey(&weak.PublicKey)
	weakPEM := write("weak.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ = x509.MarshalPKIXPublicKey(&p384.PublicKey)
	p384PEM := write("p384.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	enc := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	offCurve := ek.PublicKey.Y.FillBytes(make([]byte, 32))
	offCurve[31] ^= 1
	jwks := func(name string, keys ...map[string]string) string {
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return write(name, b)
	}
	good := map[string]string{"kty": "EC", "kid": "a", "crv": "P-256",
		"x": enc(ek.PublicKey.X.FillBytes(make([]byte, 32))), "y": enc(ek.PublicKey.Y.FillBytes(make([]byte, 32)))}
	cases := map[string]Config{
		"RSA 1024 PEM":  {PublicKeyFiles: []string{weakPEM}},
		"P-384 PEM":     {PublicKeyFiles: []string{p384PEM}},
		"missing file":  {PublicKeyFiles: []string{filepath.Join(dir, "nope.pem")}},
		"off-curve JWK": {JWKSFile: jwks("off.json", map[string]string{"kty": "EC", "kid": "a", "crv": "P-256", "x": good["x"], "y": enc(offCurve)})},
		"RSA 1024 JWK":  {JWKSFile: jwks("weak.json", map[string]string{"kty": "RSA", "kid": "a", "n": enc(weak.N.Bytes()), "e": "AQAB"})},
		"duplicate kid": {JWKSFile: jwks("dup.json", good, good)},
		"no key":        {},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Config{JWKSFile: jwks("good.json", good)}); err != nil {
		t.Errorf("a valid P-256 JWK: %v", err)
	}
}
