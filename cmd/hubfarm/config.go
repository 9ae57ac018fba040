package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/auth"
	"github.com/orchestratorchat/hubfarm/orchestration"
)

// flagSet wraps flag.FlagSet so that every flag also reads its default from
// HUBFARM_<NAME> (upper case, dashes as underscores). The flag on the command
// line wins over the environment, which wins over the built-in default.
type flagSet struct {
	*flag.FlagSet
	envErrs []string
}

func newFlagSet(name string, stderr io.Writer) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &flagSet{FlagSet: fs}
}

func envName(flagName string) string {
	return "HUBFARM_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *flagSet) env(name string) (string, bool) {
	return os.LookupEnv(envName(name))
}

func (f *flagSet) String(p *string, name, def, usage string) {
	if v, ok := f.env(name); ok {
		def = v
	}
	f.StringVar(p, name, def, usage+" ["+envName(name)+"]")
}

func (f *flagSet) Int(p *int, name string, def int, usage string) {
	if v, ok := f.env(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Sprintf("%s=%q is not an integer", envName(name), v))
		} else {
			def = n
		}
	}
	f.IntVar(p, name, def, usage+" ["+envName(name)+"]")
}

func (f *flagSet) Bool(p *bool, name string, def bool, usage string) {
	if v, ok := f.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Sprintf("%s=%q is not a boolean", envName(name), v))
		} else {
			def = b
		}
	}
	f.BoolVar(p, name, def, usage+" ["+envName(name)+"]")
}

func (f *flagSet) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	if v, ok := f.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Sprintf("%s=%q is not a duration", envName(name), v))
		} else {
			def = d
		}
	}
	f.DurationVar(p, name, def, usage+" ["+envName(name)+"]")
}

// parse parses args and reports environment variables that did not parse.
func (f *flagSet) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		return errUsage
	}
	if len(f.envErrs) > 0 {
		return fmt.Errorf("environment: %s", strings.Join(f.envErrs, "; "))
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", f.Args())
	}
	return nil
}

// nodeFlags are the settings shared by serve and dev.
type nodeFlags struct {
	prefix            string
	logLevel          string
	logFormat         string
	devTrustUserParam bool
	heartbeat         time.Duration
	drainWindow       time.Duration
	maxMessageSize    int
	maxFrameSize      int
	sendQueueBytes    int
	sendQueueFrames   int
	keepAlive         time.Duration
	clientTimeout     time.Duration
	allowedOrigins    string
	enableBash        bool
	invocationRate    float64
	maxConnsPerUser   int
	maxConns          int
	workers           int
	noWorkers         bool
}

// check refuses node flag values that would otherwise be taken for a
// default or fail later.
func (n *nodeFlags) check() error {
	if !n.noWorkers && n.workers < 1 {
		return fmt.Errorf("--workers %d: must be at least 1 (--no-workers runs none)", n.workers)
	}
	if n.maxFrameSize < 0 || (n.maxFrameSize > 0 && n.maxFrameSize <= n.maxMessageSize) {
		return fmt.Errorf("--max-frame-size %d: must exceed --max-message-size %d (0: four times it, at least 1 MiB)", n.maxFrameSize, n.maxMessageSize)
	}
	return nil
}

func (n *nodeFlags) register(f *flagSet, defaultLogFormat string) {
	f.String(&n.prefix, "prefix", "hf", "prefix of every Redis key and channel (several farms can share one Redis)")
	f.Int(&n.workers, "workers", orchestration.DefaultWorkers, "orchestration job workers on this node (plan steps, agent answers, tool calls); raised to --job-partitions")
	f.Bool(&n.noWorkers, "no-workers", false, "run no job workers: this node serves the hubs only and other nodes run the jobs")
	f.String(&n.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.String(&n.logFormat, "log-format", defaultLogFormat, "log format: json or text")
	f.Duration(&n.heartbeat, "heartbeat", 2*time.Second, "node heartbeat interval; a node silent for 3 intervals is dead")
	f.Duration(&n.drainWindow, "drain-window", 10*time.Second, "on SIGTERM, spread closing connections (with allowReconnect) over this window")
	f.Int(&n.maxMessageSize, "max-message-size", 100<<10, "maximum size in bytes of one incoming hub message (a WebSocket message may carry several)")
	f.Int(&n.maxFrameSize, "max-frame-size", 0, "maximum size in bytes of one incoming WebSocket message (0: four times --max-message-size, at least 1 MiB)")
	f.Int(&n.sendQueueBytes, "send-queue-bytes", 1<<20, "bytes queued for one connection before it is closed as a slow consumer")
	f.Int(&n.sendQueueFrames, "send-queue-frames", 4096, "records queued for one connection before it is closed as a slow consumer")
	f.Duration(&n.keepAlive, "keep-alive", 15*time.Second, "send a Ping to a connection idle for this long")
	f.Duration(&n.clientTimeout, "client-timeout", 30*time.Second, "close a connection silent for this long")
	f.String(&n.allowedOrigins, "allowed-origins", "", "comma-separated browser origins allowed to connect cross-origin (\"*\" = any; default: same origin only)")
	f.Float(&n.invocationRate, "invocation-rate", 200, "hub invocations per second one connection may make (burst: twice that)")
	f.Int(&n.maxConnsPerUser, "max-connections-per-user", 100, "connections one user may hold farm-wide")
	f.Int(&n.maxConns, "max-connections", 100000, "connections one node may hold; further WebSocket requests are refused with 503 (the load balancer tries another node)")
	f.Bool(&n.enableBash, "enable-bash", false, "offer the bash tool to ExecuteTool (always behind the approval policy)")
}

func (f *flagSet) Float(p *float64, name string, def float64, usage string) {
	if v, ok := f.env(name); ok {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			f.envErrs = append(f.envErrs, fmt.Sprintf("%s=%q is not a number", envName(name), v))
		} else {
			def = x
		}
	}
	f.Float64Var(p, name, def, usage+" ["+envName(name)+"]")
}

// authFlags select how clients are authenticated.
type authFlags struct {
	secret, previousSecret, publicKeys, jwks, issuer, audience string
}

func (a *authFlags) register(f *flagSet) {
	f.String(&a.secret, "jwt-secret", "", "HS256 secret verifying client JWTs")
	f.String(&a.previousSecret, "jwt-previous-secret", "", "HS256 secret being rotated out: still verifies client JWTs next to --jwt-secret")
	f.String(&a.publicKeys, "jwt-public-key", "", "comma-separated PEM files of RS256/ES256 public keys (key id = file base name)")
	f.String(&a.jwks, "jwks-file", "", "JWKS file of RS256/ES256 public keys")
	f.String(&a.issuer, "jwt-issuer", "", "required iss claim (optional)")
	f.String(&a.audience, "jwt-audience", "", "required aud claim (optional)")
}

// verifier builds the JWT verifier, or nil when no key is configured.
func (a *authFlags) verifier() (*auth.Verifier, error) {
	var files []string
	for _, p := range strings.Split(a.publicKeys, ",") {
		if p = strings.TrimSpace(p); p != "" {
			files = append(files, p)
		}
	}
	if a.secret == "" && a.previousSecret == "" && len(files) == 0 && a.jwks == "" {
		return nil, nil
	}
	var previous [][]byte
	if a.previousSecret != "" {
		previous = [][]byte{[]byte(a.previousSecret)}
	}
	v, err := auth.New(auth.Config{HS256Secret: []byte(a.secret), PreviousHS256Secrets: previous, PublicKeyFiles: files,
		JWKSFile: a.jwks, Issuer: a.issuer, Audience: a.audience})
	if err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}
	return v, nil
}
