package orchestration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

func TestPartitionTags(t *testing.T) {
	for _, n := range []int{2, 3, 4, 8, 16} {
		k := newKeys("hf", n)
		seen := map[string]bool{}
		for i, p := range k.parts {
			if seen[p.tag] {
				t.Fatalf("n=%d: tag %s twice", n, p.tag)
			}
			seen[p.tag] = true
			slot := redisconn.Slot(p.jobs)
			if lo, hi := i*redisconn.ClusterSlots/n, (i+1)*redisconn.ClusterSlots/n; slot < lo || slot >= hi {
				t.Errorf("n=%d: partition %d (%s) in slot %d, outside [%d,%d)", n, i, p.tag, slot, lo, hi)
			}
			for _, key := range []string{p.dead, p.delayed, p.deadlines} {
				if redisconn.Slot(key) != slot {
					t.Errorf("n=%d: %s not in the slot of %s", n, key, p.jobs)
				}
			}
		}
		if newKeys("hf", n).parts[n-1].tag != k.parts[n-1].tag {
			t.Errorf("n=%d: tags are not deterministic", n)
		}
	}
	// A plan, a session's messages and conversation sit with their
	// partition's keys.
	k := newKeys("hf", 3)
	used := map[int]bool{}
	for _, id := range []string{"0b6f7c1e-1", "5d1c0a2b-2", "9e8d7c6b-3", "c0ffee00-4", "deadbeef-5", "12345678-6"} {
		p := k.partOf(id)
		used[p] = true
		slot := redisconn.Slot(k.parts[p].jobs)
		for _, key := range []string{k.plan(id), k.conv(id), k.msg(p, "m1")} {
			if redisconn.Slot(key) != slot {
				t.Errorf("%s is not in partition %d's slot", key, p)
			}
		}
	}
	if len(used) < 2 {
		t.Errorf("six ids all hashed to one of three partitions")
	}
	if redisconn.Slot(k.agentRunning("x")) != redisconn.Slot(k.agentLast("x")) {
		t.Errorf("an agent's keys are in different slots")
	}
	// One partition keeps the historical layout.
	one := newKeys("hf", 1)
	if one.plan("p") != "hf:plan:p" || one.parts[0].jobs != "hf:jobs" || one.msg(0, "m") != "hf:msg:m" ||
		one.conv("s") != "hf:conv:s" || one.agentLast("a") != "hf:agent:a:last" || one.parts[0].deadlines != "hf:plans:deadlines" {
		t.Errorf("one partition changed the key layout: %+v", one.parts[0])
	}
}

func TestPartitionsConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Partitions: 3, Prefix: "{hf}", Workers: 4}, "hash tag"},
		{Config{Partitions: 4, Workers: 2}, "at least Partitions"},
	} {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: New does no I/O
		_, err := New(c.cfg, rdb, newFakeSessions(), NewMemoryCatalog(), nil)
		rdb.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %q", c.cfg, err, c.want)
		}
	}
	if c := DefaultConfig("n"); c.Partitions != 1 {
		t.Errorf("default partitions %d", c.Partitions)
	}
}

// Plans of every strategy, retries, a cancellation and agent messages run
// on three partitions, every script's keys in one Cluster slot.
func TestPartitionedPlans(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		agents := scripted3()
		agents["flaky"] = &Scripted{FailAttempts: 1}
		agents["slow"] = &Scripted{Delay: time.Minute}
		v := newEnv(t, b, agents)
		var slots *slotChecker
		if testPartitions() == 1 { // else newEnv hooked one in already
			slots = checkSlots(t, v.rdb)
		}
		router := &fakeRouter{}
		mk := func(name string) Config {
			c := testConfig(name, 4)
			c.Partitions = 3
			return c
		}
		api := v.msgNode(mk("api"), nil, router)
		v.msgNode(mk("n1"), nil, router)
		v.msgNode(mk("n2"), nil, router)

		used := map[int]bool{}
		// Until every partition has had plans (at least 8).
		for i := 0; i < 8 || len(used) < 3 && i < 40; i++ {
			strategy := []contract.OrchestrationStrategy{contract.StrategySequential, contract.StrategyParallel,
				contract.StrategyAdaptive, contract.StrategyRoundRobin}[i%4]
			plan, res := v.run(api, request(strategy, 4, "a", "b", "flaky"))
			used[api.keys.partOf(plan.ID)] = true
			if !res.Success || len(res.StepResults) != len(plan.Steps) {
				t.Fatalf("%v plan: %+v", strategy, res)
			}
			checkEvents(t, v.sessions.planEvents(plan.ID), len(plan.Steps))
		}
		if len(used) < 3 {
			t.Errorf("plans used partitions %v only", used)
		}

		plan, err := api.CreatePlan(context.Background(), testCaller, request(contract.StrategySequential, 2, "slow", "a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := api.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the slow step to start", func() bool { return len(v.sessions.planEvents(plan.ID)) >= 2 })
		if err := api.CancelExecution(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		if res := v.await(plan.ID, 10*time.Second); res.Success {
			t.Fatalf("cancelled plan succeeded: %+v", res)
		}

		id := send(t, api, "a", "hello")
		if ev := v.outcomeOf(id, "a", 10*time.Second); ev.Target != contract.TargetReceiveAgentResponse {
			t.Fatalf("message outcome %s %s", ev.Target, ev.JSON)
		}
		waitFor(t, 5*time.Second, "no job left", func() bool {
			b, err := api.Backlog(context.Background())
			return err == nil && b.Pending+b.Queued+b.Delayed == 0
		})
		if slots != nil {
			if scripts, multis := slots.counts(); scripts < 50 || multis == 0 {
				t.Errorf("slot checker saw %d script calls and %d MULTI blocks", scripts, multis)
			}
		}
	})
}
