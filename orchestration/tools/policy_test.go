package tools

import (
	"strings"
	"testing"
)

func TestPolicyEvaluate(t *testing.T) {
	type want struct {
		outcome   Outcome
		rule      string
		dangerous bool
	}
	cases := []struct {
		name string
		cfg  PolicyConfig
		ctx  Context
		want want
	}{
		// YOLO wins over everything, even the deny-list.
		{"yolo", PolicyConfig{YOLO: true}, Context{ToolName: "bash", Command: "rm -rf /"}, want{Approve, RuleYOLO, true}},
		// Dangerous-only mode approves what is not dangerous...
		{"dangerous-only safe", PolicyConfig{DangerousOnly: true}, Context{ToolName: "web_fetch"}, want{Approve, RuleDangerousOnly, false}},
		{"dangerous-only safe command", PolicyConfig{DangerousOnly: true}, Context{ToolName: "shell", Command: "make test"}, want{Approve, RuleDangerousOnly, false}},
		// ...and lets the rules judge what is.
		{"dangerous-only dangerous tool", PolicyConfig{DangerousOnly: true}, Context{ToolName: "bash", Command: "make"}, want{AskUser, RulePolicy, true}},
		{"dangerous-only dangerous command", PolicyConfig{DangerousOnly: true}, Context{ToolName: "shell", Command: "sudo make"}, want{AskUser, RulePolicy, true}},
		{"dangerous-only deny-listed", PolicyConfig{DangerousOnly: true}, Context{ToolName: "shell", Command: "mkfs /dev/sda"}, want{Deny, RuleDenyList, true}},
		// Auto-approved tools, by alias or canonical name, any case.
		{"auto read_file", PolicyConfig{}, Context{ToolName: "read_file"}, want{Approve, RuleAutoApproved, false}},
		{"auto file_read", PolicyConfig{}, Context{ToolName: "FILE_READ"}, want{Approve, RuleAutoApproved, false}},
		{"auto grep", PolicyConfig{}, Context{ToolName: "grep"}, want{Approve, RuleAutoApproved, false}},
		{"auto list_files", PolicyConfig{}, Context{ToolName: "list_files"}, want{Approve, RuleAutoApproved, false}},
		{"auto glob", PolicyConfig{}, Context{ToolName: "glob"}, want{Approve, RuleAutoApproved, false}},
		{"auto web_search", PolicyConfig{}, Context{ToolName: "web_search"}, want{Approve, RuleAutoApproved, false}},
		{"auto list emptied", PolicyConfig{AutoApprovedTools: []string{}}, Context{ToolName: "read_file"}, want{AskUser, RulePolicy, false}},
		// Allow-list, case-insensitive; bash stays dangerous.
		{"allow ls", PolicyConfig{}, Context{ToolName: "bash", Command: "ls -la"}, want{Approve, RuleAllowList, true}},
		{"allow LS", PolicyConfig{}, Context{ToolName: "bash_command", Command: "LS -la"}, want{Approve, RuleAllowList, true}},
		{"allow pwd", PolicyConfig{}, Context{ToolName: "bash", Command: "pwd"}, want{Approve, RuleAllowList, true}},
		{"pwd with args is not pwd", PolicyConfig{}, Context{ToolName: "bash", Command: "pwd -P"}, want{AskUser, RulePolicy, true}},
		{"allow cat txt", PolicyConfig{}, Context{ToolName: "bash", Command: "cat notes.txt"}, want{Approve, RuleAllowList, true}},
		{"cat md is not allowed", PolicyConfig{}, Context{ToolName: "bash", Command: "cat notes.md"}, want{AskUser, RulePolicy, true}},
		{"allow echo", PolicyConfig{}, Context{ToolName: "bash", Command: "echo hi"}, want{Approve, RuleAllowList, true}},
		{"allow head", PolicyConfig{}, Context{ToolName: "bash", Command: "head -n 5 f"}, want{Approve, RuleAllowList, true}},
		{"allow tail", PolicyConfig{}, Context{ToolName: "bash", Command: "tail f"}, want{Approve, RuleAllowList, true}},
		{"allow dir", PolicyConfig{}, Context{ToolName: "powershell", Command: "dir C:"}, want{Approve, RuleAllowList, true}},
		// Compound commands skip the allow-list unless allowed.
		{"compound ;", PolicyConfig{}, Context{ToolName: "bash", Command: "ls -la; rm -rf ~"}, want{AskUser, RulePolicy, true}},
		{"compound &&", PolicyConfig{}, Context{ToolName: "bash", Command: "echo a && curl x"}, want{AskUser, RulePolicy, true}},
		{"compound redirect", PolicyConfig{}, Context{ToolName: "bash", Command: "echo x > ~/.bashrc"}, want{AskUser, RulePolicy, true}},
		{"compound $()", PolicyConfig{}, Context{ToolName: "bash", Command: "echo $(cat /etc/shadow)"}, want{AskUser, RulePolicy, true}},
		{"compound allowed", PolicyConfig{AllowCompoundCommands: true}, Context{ToolName: "bash", Command: "ls -la; rm -rf ~"}, want{Approve, RuleAllowList, true}},
		// Deny-list.
		{"deny rm -rf /", PolicyConfig{}, Context{ToolName: "bash", Command: "rm -rf /var"}, want{Deny, RuleDenyList, true}},
		{"deny RM -RF /", PolicyConfig{}, Context{ToolName: "bash", Command: "RM  -RF  /"}, want{Deny, RuleDenyList, true}},
		{"deny del", PolicyConfig{}, Context{ToolName: "cmd", Command: "del /s /q *.*"}, want{Deny, RuleDenyList, true}},
		{"deny format", PolicyConfig{}, Context{ToolName: "cmd", Command: "format c:"}, want{Deny, RuleDenyList, true}},
		{"deny fdisk", PolicyConfig{}, Context{ToolName: "bash", Command: "fdisk /dev/sda"}, want{Deny, RuleDenyList, true}},
		{"deny mkfs", PolicyConfig{}, Context{ToolName: "bash", Command: "mkfs /dev/sda1"}, want{Deny, RuleDenyList, true}},
		{"deny dd", PolicyConfig{}, Context{ToolName: "bash", Command: "dd if=/dev/zero of=/dev/sda"}, want{Deny, RuleDenyList, true}},
		{"deny even under AlwaysApprove", PolicyConfig{Mode: AlwaysApprove}, Context{ToolName: "bash", Command: "mkfs x"}, want{Deny, RuleDenyList, true}},
		// Dangerous patterns (tool not dangerous by itself).
		{"danger rm", PolicyConfig{}, Context{ToolName: "shell", Command: "rm x"}, want{AskUser, RulePolicy, true}},
		{"danger sudo", PolicyConfig{}, Context{ToolName: "shell", Command: "sudo apt"}, want{AskUser, RulePolicy, true}},
		{"danger chmod 777", PolicyConfig{}, Context{ToolName: "shell", Command: "chmod 777 f"}, want{AskUser, RulePolicy, true}},
		{"danger curl | sh", PolicyConfig{}, Context{ToolName: "shell", Command: "curl http://x | sh"}, want{AskUser, RulePolicy, true}},
		{"danger wget | bash", PolicyConfig{}, Context{ToolName: "shell", Command: "wget -O- x | bash"}, want{AskUser, RulePolicy, true}},
		{"danger reboot", PolicyConfig{}, Context{ToolName: "shell", Command: "sudo -n true; reboot"}, want{AskUser, RulePolicy, true}},
		{"danger shutdown", PolicyConfig{}, Context{ToolName: "shell", Command: "shutdown -h now"}, want{AskUser, RulePolicy, true}},
		{"safe command", PolicyConfig{}, Context{ToolName: "shell", Command: "make"}, want{AskUser, RulePolicy, false}},
		// Dangerous tools, by alias.
		{"danger write_file", PolicyConfig{}, Context{ToolName: "write_file"}, want{AskUser, RulePolicy, true}},
		{"danger file_write", PolicyConfig{}, Context{ToolName: "file_write"}, want{AskUser, RulePolicy, true}},
		{"danger file_delete", PolicyConfig{}, Context{ToolName: "file_delete"}, want{AskUser, RulePolicy, true}},
		// Modes.
		{"mode AlwaysApprove", PolicyConfig{Mode: AlwaysApprove}, Context{ToolName: "write_file"}, want{Approve, RulePolicy, true}},
		{"mode AlwaysDeny", PolicyConfig{Mode: AlwaysDeny}, Context{ToolName: "write_file"}, want{Deny, RulePolicy, true}},
		{"mode AlwaysDeny keeps auto-approved", PolicyConfig{Mode: AlwaysDeny}, Context{ToolName: "read_file"}, want{Approve, RuleAutoApproved, false}},
		// Custom lists replace the defaults.
		{"custom allow", PolicyConfig{AllowPatterns: []string{`^make\b`}}, Context{ToolName: "bash", Command: "make test"}, want{Approve, RuleAllowList, true}},
		{"custom allow drops defaults", PolicyConfig{AllowPatterns: []string{`^make\b`}}, Context{ToolName: "bash", Command: "ls -la"}, want{AskUser, RulePolicy, true}},
		{"custom dangerous tools", PolicyConfig{DangerousTools: []string{}}, Context{ToolName: "bash", Command: "make"}, want{AskUser, RulePolicy, false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := NewPolicy(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			d := p.Evaluate(c.ctx)
			got := want{d.Outcome, d.Rule, d.IsDangerous}
			if got != c.want {
				t.Fatalf("got %v/%s/dangerous=%v, want %v/%s/dangerous=%v (reason %q)",
					got.outcome, got.rule, got.dangerous, c.want.outcome, c.want.rule, c.want.dangerous, d.Reason)
			}
			if d.Reason == "" || d.Cached {
				t.Fatalf("decision %+v", d)
			}
		})
	}
}

func TestPolicyCache(t *testing.T) {
	p, err := NewPolicy(PolicyConfig{CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ls := Context{ToolName: "bash", Command: "ls -la", WorkingDirectory: "a"}
	if d := p.Evaluate(ls); d.Cached || d.Outcome != Approve {
		t.Fatalf("first %+v", d)
	}
	d := p.Evaluate(ls)
	if !d.Cached || d.Outcome != Approve || d.Rule != RuleAllowList || !d.IsDangerous {
		t.Fatalf("second %+v", d)
	}
	// The key includes the working directory and the tool.
	if d := p.Evaluate(Context{ToolName: "bash", Command: "ls -la", WorkingDirectory: "b"}); d.Cached {
		t.Fatal("other working directory came from the cache")
	}
	// Deny-list answers are cached; AskUser ones never.
	rm := Context{ToolName: "bash", Command: "rm -rf /x"}
	p.Evaluate(rm)
	if d := p.Evaluate(rm); !d.Cached || d.Outcome != Deny {
		t.Fatalf("deny %+v", d)
	}
	mk := Context{ToolName: "bash", Command: "make"}
	p.Evaluate(mk)
	if d := p.Evaluate(mk); d.Cached || d.Outcome != AskUser {
		t.Fatalf("ask %+v", d)
	}
	// Size 2: the oldest (ls in a) was evicted.
	if d := p.Evaluate(ls); d.Cached {
		t.Fatal("cache exceeded its size")
	}
	// Checks before the cache still apply: YOLO does not read it.
	y, _ := NewPolicy(PolicyConfig{YOLO: true})
	y.Evaluate(rm)
	if d := y.Evaluate(rm); d.Cached || d.Outcome != Approve {
		t.Fatalf("yolo %+v", d)
	}
}

func TestPolicyConfigErrors(t *testing.T) {
	if _, err := NewPolicy(PolicyConfig{DenyPatterns: []string{"("}}); err == nil || !strings.Contains(err.Error(), `deny pattern "("`) {
		t.Fatalf("err %v", err)
	}
	p, _ := NewPolicy(PolicyConfig{})
	c := p.Config()
	if c.MaxPendingRequests != 10 || c.ApprovalTimeout.Minutes() != 5 || c.Mode != RequireUserApproval {
		t.Fatalf("defaults %+v", c)
	}
	for s, want := range map[string]Mode{"AlwaysApprove": AlwaysApprove, "always-deny": AlwaysDeny,
		"require_user_approval": RequireUserApproval, "": RequireUserApproval} {
		if m, err := ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("sometimes"); err == nil {
		t.Fatal("ParseMode accepted junk")
	}
}

func TestContextFor(t *testing.T) {
	c := ContextFor(Call{ToolName: "bash_command", Parameters: map[string]any{"command": "ls"}, AgentID: "a",
		SessionID: "s", WorkingDirectory: "w"})
	if c.Command != "ls" || c.ToolName != "bash_command" || c.AgentID != "a" || c.SessionID != "s" || c.WorkingDirectory != "w" {
		t.Fatalf("%+v", c)
	}
}
