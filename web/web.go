// Package web serves the browser console of a hub node: a single-page
// application made of plain JavaScript modules and CSS, embedded in the
// binary, plus the small JSON endpoint it reads the farm from (FarmAPI).
//
// The console is a real client of the hubs: its SignalR client (JSON
// protocol over WebSocket) lives in static/js/signalr.js. Nothing is built:
// the files under static/ are served as they are.
//
// Handler serves "/" (the page) and "/assets/..." (its modules, styles and
// icons); a node mounts it next to its hub routes without shadowing them.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed static
var embedded embed.FS

// AssetsPrefix is the URL path under which the console's files are served.
const AssetsPrefix = "/assets/"

// Static is the console's file tree (index.html, css/, js/) without the
// "static" directory prefix.
func Static() fs.FS {
	sub, err := fs.Sub(embedded, "static")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

// contentSecurityPolicy allows the page only its own scripts and styles, and
// connections to its own origin (HTTP and WebSocket).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; " +
	"frame-ancestors 'none'; object-src 'none'"

type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console: GET/HEAD "/" is the page, "/assets/<file>"
// a file of it. Anything else is 404, so mount it only on those paths.
// Responses carry a strong ETag and "Cache-Control: no-cache" (revalidate
// every time: a new binary serves new files under the same names), and a
// restrictive Content-Security-Policy.
func Handler() http.Handler {
	files := map[string]file{}
	root := Static()
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js", ".mjs":
			ct = "text/javascript; charset=utf-8" // modules need a JavaScript type
		case "":
			ct = "application/octet-stream"
		}
		files[p] = file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var name string
		switch {
		case r.URL.Path == "/" || r.URL.Path == "/index.html":
			name = "index.html"
		case strings.HasPrefix(r.URL.Path, AssetsPrefix):
			name = strings.TrimPrefix(r.URL.Path, AssetsPrefix)
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("ETag", f.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if name == "index.html" {
			h.Set("Content-Security-Policy", contentSecurityPolicy)
			h.Set("X-Frame-Options", "DENY")
		}
		if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Length", strconv.Itoa(len(f.body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(f.body)
	})
}

// etagMatches reports whether an If-None-Match header names etag (or "*").
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		t = strings.TrimPrefix(t, "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
