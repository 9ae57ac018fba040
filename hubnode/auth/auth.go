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
//
// Keys rotate without a moment where valid tokens are refused: HS256
// accepts previous secrets next to the current one, and public keys are
// told apart by kid (a token without kid is tried against every key).
package auth

import (
	"crypto"
	"crypto/ecdh"
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
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Config selects the keys and the claims to check. At least one key source
// must be set.
type Config struct {
	// HS256Secret verifies HS256 tokens.
	HS256Secret []byte
	// PreviousHS256Secrets also verify HS256 tokens: the secrets being
	// rotated out, accepted until the tokens signed with them expired.
	PreviousHS256Secrets [][]byte
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
	cfg     Config
	secrets []jwt.VerificationKey       // HS256: the current secret first
	keys    map[string]crypto.PublicKey // by kid; "" holds a key without one
	parser  *jwt.Parser
}

// MaxSubjectLength bounds the sub claim: user ids are Redis key and channel
// parts and hub method arguments (InviteToSession), which accept ids of at
// most this many bytes.
const MaxSubjectLength = 128

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
	for _, s := range append([][]byte{cfg.HS256Secret}, cfg.PreviousHS256Secrets...) {
		if len(s) > 0 {
			v.secrets = append(v.secrets, s)
		}
	}
	for _, f := range cfg.PublicKeyFiles {
		k, err := loadPEMPublicKey(f)
		if err != nil {
			return nil, err
		}
		base := f[strings.LastIndex(f, "/")+1:]
		if i := strings.LastIndex(base, "."); i > 0 {
			base = base[:i]
		}
		if _, dup := v.keys[base]; dup {
			return nil, fmt.Errorf("auth: public key %s: another key file has the key id %q", f, base)
		}
		v.keys[base] = k
	}
	if cfg.JWKSFile != "" {
		if err := v.loadJWKS(cfg.JWKSFile); err != nil {
			return nil, err
		}
	}
	if len(cfg.HS256Secret) == 0 && len(cfg.PreviousHS256Secrets) > 0 {
		return nil, errors.New("auth: previous HS256 secrets need a current one")
	}
	if len(v.secrets) == 0 && len(v.keys) == 0 {
		return nil, errors.New("auth: no key configured (HS256 secret, public keys or JWKS)")
	}
	var methods []string
	if len(v.secrets) > 0 {
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
	if err := checkSubject(tc.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	c := Claims{Subject: tc.Subject, Roles: append(stringsOf(tc.Role), stringsOf(tc.Roles)...)}
	if tc.ExpiresAt != nil {
		c.Expires = tc.ExpiresAt.Time
	}
	return c, nil
}

// checkSubject refuses a sub that cannot be a user id: empty, longer than
// MaxSubjectLength, not UTF-8, or with control characters (which would
// forge lines of a text log).
func checkSubject(sub string) error {
	switch {
	case sub == "":
		return errors.New("no sub claim")
	case len(sub) > MaxSubjectLength:
		return fmt.Errorf("sub claim longer than %d bytes", MaxSubjectLength)
	case !utf8.ValidString(sub):
		return errors.New("sub claim is not UTF-8")
	}
	for _, r := range sub {
		if unicode.IsControl(r) {
			return errors.New("sub claim has control characters")
		}
	}
	return nil
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

// keyFor picks the keys a token may be signed with. Several keys go to the
// parser as a set, which accepts the token if any of them verifies it.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case "HS256":
		switch len(v.secrets) {
		case 0:
			return nil, errors.New("HS256 not accepted")
		case 1:
			return v.secrets[0], nil
		}
		return jwt.VerificationKeySet{Keys: v.secrets}, nil
	case "RS256", "ES256":
		if kid, _ := t.Header["kid"].(string); kid != "" {
			if k, ok := v.keys[kid]; ok {
				return k, nil
			}
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		// No kid: any configured key of the token's type may have signed
		// it (issuers that omit kid keep working across a rotation).
		var set jwt.VerificationKeySet
		for _, k := range v.keys {
			if keyFits(t.Method.Alg(), k) {
				set.Keys = append(set.Keys, k)
			}
		}
		switch len(set.Keys) {
		case 0:
			return nil, fmt.Errorf("no %s key configured", t.Method.Alg())
		case 1:
			return set.Keys[0], nil
		}
		return set, nil
	}
	return nil, fmt.Errorf("algorithm %s not accepted", t.Method.Alg())
}

// keyFits reports whether k can verify alg.
func keyFits(alg string, k crypto.PublicKey) bool {
	switch k.(type) {
	case *rsa.PublicKey:
		return alg == "RS256"
	case *ecdsa.PublicKey:
		return alg == "ES256"
	}
	return false
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

// Grant is what a minted token says.
type Grant struct {
	// Subject is the user (required).
	Subject string
	// Roles go to the role claim (one) or the roles claim (several).
	Roles []string
	// Issuer and Audience, when set, become iss and aud: a farm started
	// with --jwt-issuer or --jwt-audience requires them.
	Issuer, Audience string
	// TTL is how long the token is valid from Now (required, positive).
	TTL time.Duration
	// Now is when the token is issued. Default time.Now().
	Now time.Time
}

// Mint signs an HS256 development token carrying g.
func Mint(secret []byte, g Grant) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: mint: no secret")
	}
	if err := checkSubject(g.Subject); err != nil {
		return "", fmt.Errorf("auth: mint: %v", err)
	}
	if g.TTL <= 0 {
		return "", errors.New("auth: mint: the validity must be positive")
	}
	if g.Now.IsZero() {
		g.Now = time.Now()
	}
	claims := jwt.MapClaims{"sub": g.Subject, "iat": g.Now.Unix(), "exp": g.Now.Add(g.TTL).Unix()}
	if len(g.Roles) == 1 {
		claims["role"] = g.Roles[0]
	} else if len(g.Roles) > 1 {
		claims["roles"] = g.Roles
	}
	if g.Issuer != "" {
		claims["iss"] = g.Issuer
	}
	if g.Audience != "" {
		claims["aud"] = g.Audience
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return tok, nil
}

// loadPEMPublicKey reads an RS256 (RSA, at least minRSABits) or ES256
// (P-256) public key from a PEM file.
func loadPEMPublicKey(path string) (crypto.PublicKey, error) {
	k, err := parsePEMPublicKey(path)
	if err != nil {
		return nil, err
	}
	switch pk := k.(type) {
	case *rsa.PublicKey:
		if pk.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("auth: public key %s: RSA modulus of %d bits; at least %d required", path, pk.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey:
		if pk.Curve != elliptic.P256() {
			return nil, fmt.Errorf("auth: public key %s: ES256 needs a P-256 key, not %s", path, pk.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("auth: public key %s: %T is neither an RSA nor an ECDSA key", path, k)
	}
	return k, nil
}

func parsePEMPublicKey(path string) (crypto.PublicKey, error) {
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
		kid := k.Kid
		if kid == "" {
			// Tokens without kid try every key; the name only keeps
			// kid-less keys apart.
			kid = fmt.Sprintf("%s#%d", path, i)
		}
		if _, dup := v.keys[kid]; dup {
			return fmt.Errorf("auth: jwks %s: key id %q used twice", path, kid)
		}
		v.keys[kid] = pk
	}
	return nil
}

// minRSABits is the smallest RSA modulus accepted: shorter keys can be
// factored.
const minRSABits = 2048

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
		if n.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA modulus of %d bits; at least %d required", n.BitLen(), minRSABits)
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return nil, errors.New("RSA exponent out of range")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("curve %s not supported", k.Crv)
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil {
			return nil, err
		}
		y, err := base64.RawURLEncoding.DecodeString(k.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != 32 || len(y) != 32 {
			return nil, errors.New("P-256 coordinates must be 32 bytes each")
		}
		// A point off the curve must never reach signature checks.
		if _, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, x...), y...)); err != nil {
			return nil, fmt.Errorf("not a P-256 point: %w", err)
		}
		return &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
	}
	return nil, fmt.Errorf("key type %s not supported", k.Kty)
}
