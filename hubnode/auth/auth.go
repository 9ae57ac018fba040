// Package auth verifies the JWT bearer tokens of hub clients and mints
// development tokens.
//
// Tokens come from the Authorization header ("Bearer ...") or, because
// browsers cannot set headers on a WebSocket, from the access_token query
// parameter. HS256 tokens are checked with a shared secret; RS256 and ES256
// tokens with public keys (PEM files) or a JWKS file, chosen by the token's
// "kid" when there are several. exp and nbf are always checked; iss and aud
// when configured. sub is the user; a "role" (string) or "roles" (array)
// claim carries roles, of which "admin" grants access to every session.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config selects the keys and the claims to check. At least one key source
// must be set.
type Config struct {
	// HS256Secret verifies HS256 tokens.
	HS256Secret []byte
	// PublicKeyFiles are PEM files (PKIX public keys or certificates) that
	// verify RS256/ES256 tokens; a file's key id is its base name without
	// extension, matched against the token's kid when the token has one.
	PublicKeyFiles []string
	// JWKSFile is a JSON Web Key Set file of RS256/ES256 public keys.
	JWKSFile string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience, when set, must be in the token's aud.
	Audience string
	// Leeway tolerates clock skew on exp/nbf. Default 30s.
	Leeway time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Claims are the facts a verified token establishes.
type Claims struct {
	Subject string
	Roles   []string
	Expires time.Time
}

// IsAdmin reports whether the roles include "admin".
func (c Claims) IsAdmin() bool {
	for _, r := range c.Roles {
		if r == "admin" {
			return true
		}
	}
	return false
}

// Verifier checks tokens. It is safe for concurrent use; keys are loaded
// once by New (restart or rebuild it to rotate keys).
type Verifier struct {
	cfg    Config
	keys   map[string]crypto.PublicKey // by kid; "" holds the only key when unnamed
	parser *jwt.Parser
}

// Errors a caller can tell apart (all are refusals: 401).
var (
	ErrNoToken      = errors.New("no bearer token")
	ErrInvalidToken = errors.New("invalid token")
)

// New loads the keys.
func New(cfg Config) (*Verifier, error) {
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg, keys: map[string]crypto.PublicKey{}}
	for _, f := range cfg.PublicKeyFiles {
		k, err := loadPEMPublicKey(f)
		if err != nil {
			return nil, err
		}
		base := f[strings.LastIndex(f, "/")+1:]
		if i := strings.LastIndex(base, "."); i > 0 {
			base = base[:i]
		}
		v.keys[base] = k
	}
	if cfg.JWKSFile != "" {
		if err := v.loadJWKS(cfg.JWKSFile); err != nil {
			return nil, err
		}
	}
	if len(cfg.HS256Secret) == 0 && len(v.keys) == 0 {
		return nil, errors.New("auth: no key configured (HS256 secret, public keys or JWKS)")
	}
	var methods []string
	if len(cfg.HS256Secret) > 0 {
		methods = append(methods, "HS256")
	}
	if len(v.keys) > 0 {
		methods = append(methods, "RS256", "ES256")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(cfg.Now)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

type tokenClaims struct {
	jwt.RegisteredClaims
	Role  any `json:"role,omitempty"`
	Roles any `json:"roles,omitempty"`
}

// Verify checks a raw token and returns its claims.
func (v *Verifier) Verify(raw string) (Claims, error) {
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(raw, &tc, v.keyFor)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if tc.Subject == "" {
		return Claims{}, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	c := Claims{Subject: tc.Subject, Roles: append(stringsOf(tc.Role), stringsOf(tc.Roles)...)}
	if tc.ExpiresAt != nil {
		c.Expires = tc.ExpiresAt.Time
	}
	return c, nil
}

func stringsOf(v any) []string {
	switch x := v.(type) {
	case string:
		if x == "" {
			return nil
		}
		return strings.Fields(strings.ReplaceAll(x, ",", " "))
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case "HS256":
		if len(v.cfg.HS256Secret) == 0 {
			return nil, errors.New("HS256 not accepted")
		}
		return v.cfg.HS256Secret, nil
	case "RS256", "ES256":
		kid, _ := t.Header["kid"].(string)
		if kid != "" {
			if k, ok := v.keys[kid]; ok {
				return k, nil
			}
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		if len(v.keys) == 1 {
			for _, k := range v.keys {
				return k, nil
			}
		}
		return nil, errors.New("token has no kid and several keys are configured")
	}
	return nil, fmt.Errorf("algorithm %s not accepted", t.Method.Alg())
}

// TokenFromRequest extracts the bearer token from the Authorization header
// or the access_token query parameter.
func TokenFromRequest(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:]), nil
		}
		return "", fmt.Errorf("%w: Authorization header is not a bearer token", ErrInvalidToken)
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, nil
	}
	return "", ErrNoToken
}

// Authenticate verifies the request's token.
func (v *Verifier) Authenticate(r *http.Request) (Claims, error) {
	raw, err := TokenFromRequest(r)
	if err != nil {
		return Claims{}, err
	}
	return v.Verify(raw)
}

// Mint signs an HS256 development token for sub with the given roles,
// valid for ttl.
func Mint(secret []byte, sub string, roles []string, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: mint: no secret")
	}
	if sub == "" {
		return "", errors.New("auth: mint: no subject")
	}
	claims := jwt.MapClaims{"sub": sub, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if len(roles) == 1 {
		claims["role"] = roles[0]
	} else if len(roles) > 1 {
		claims["roles"] = roles
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

func loadPEMPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("auth: public key %s: no PEM block", path)
	}
	switch block.Type {
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: public key %s: %w", path, err)
		}
		return cert.PublicKey, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: public key %s: %w", path, err)
		}
		return k, nil
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: public key %s: %w", path, err)
	}
	return k, nil
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func (v *Verifier) loadJWKS(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("auth: jwks: %w", err)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return fmt.Errorf("auth: jwks %s: %w", path, err)
	}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pk, err := k.publicKey()
		if err != nil {
			return fmt.Errorf("auth: jwks %s: key %d (%s): %w", path, i, k.Kid, err)
		}
		v.keys[k.Kid] = pk
	}
	return nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	return new(big.Int).SetBytes(b), nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err := b64int(k.N)
		if err != nil {
			return nil, err
		}
		e, err := b64int(k.E)
		if err != nil {
			return nil, err
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("curve %s not supported", k.Crv)
		}
		x, err := b64int(k.X)
		if err != nil {
			return nil, err
		}
		y, err := b64int(k.Y)
		if err != nil {
			return nil, err
		}
		pk := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
		return pk, nil
	}
	return nil, fmt.Errorf("key type %s not supported", k.Kty)
}
