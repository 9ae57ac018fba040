package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/auth"
)

// runToken mints an HS256 development token. Its flags share the names
// (and so the HUBFARM_* variables) of serve's: a shell set up for a node
// mints tokens that node accepts, iss and aud included.
func runToken(args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("token", stderr)
	var (
		secret, sub, roles, issuer, audience string
		ttl                                  time.Duration
	)
	f.String(&secret, "jwt-secret", "", "HS256 secret (the farm's --jwt-secret)")
	f.String(&sub, "sub", "", "user id (the sub claim)")
	f.String(&roles, "role", "", "comma-separated roles (e.g. admin)")
	f.String(&issuer, "jwt-issuer", "", "iss claim (the farm's --jwt-issuer, when it has one)")
	f.String(&audience, "jwt-audience", "", "aud claim (the farm's --jwt-audience, when it has one)")
	f.Duration(&ttl, "ttl", time.Hour, "validity")
	if err := f.parse(args); err != nil {
		return err
	}
	if secret == "" || sub == "" {
		return errors.New("--jwt-secret and --sub are required")
	}
	var rs []string
	for _, r := range strings.Split(roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rs = append(rs, r)
		}
	}
	tok, err := auth.Mint([]byte(secret), auth.Grant{Subject: sub, Roles: rs, Issuer: issuer, Audience: audience, TTL: ttl})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
