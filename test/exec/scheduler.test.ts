import { describe, expect, test } from "bun:test";
import { ManualClock } from "../../src/clock";
import { Semaphore } from "../../src/exec/pool";
import { Scheduler } from "../../src/exec/scheduler";

/** Work the test finishes by hand, recording when it started. */
function gate() {
  const started: string[] = [];
  const release = new Map<string, () => void>();
  const job = (label: string) => () => {
    started.push(label);
    return new Promise<string>((resolve) => release.set(label, () => resolve(label)));
  };
  const finish = async (label: string) => {
    while (!release.has(label)) await Bun.sleep(0);
    release.get(label)!();
    await Bun.sleep(0);
    await Bun.sleep(0);
  };
  return { started, job, finish };
}

describe("scheduler", () => {
  test("runs at most `jobs` operations at once and counts queued, running and done", async () => {
    const s = new Scheduler<string>({ jobs: 2 });
    const g = gate();
    const ops = ["a", "b", "c"].map((l) => s.submit({ client: "one", run: g.job(l) }).op);
    await Bun.sleep(0);
    expect(g.started).toEqual(["a", "b"]);
    expect(s.stats()).toMatchObject({ queued: 1, running: 2, done: 0 });
    expect(ops.map((o) => o.stage)).toEqual(["executing", "executing", "queued"]);
    await g.finish("a");
    expect(g.started).toEqual(["a", "b", "c"]);
    expect(await ops[0]!.done).toBe("a");
    expect(s.stats()).toMatchObject({ queued: 0, running: 2, done: 1 });
  });

  test("takes queued work round-robin by client, so one big build cannot starve another", async () => {
    const s = new Scheduler<string>({ jobs: 1 });
    const g = gate();
    s.submit({ client: "x", run: g.job("blocker") });
    for (let i = 1; i <= 3; i++) s.submit({ client: "big", run: g.job(`big${i}`) });
    s.submit({ client: "small", run: g.job("small1") });
    s.submit({ client: "small", run: g.job("small2") });
    for (const label of ["blocker", "big1", "small1", "big2", "small2"]) await g.finish(label);
    expect(g.started).toEqual(["blocker", "big1", "small1", "big2", "small2", "big3"]);
  });

  test("identical work in flight is joined, not repeated; without a key it is repeated", async () => {
    const s = new Scheduler<string>({ jobs: 4 });
    let runs = 0;
    const run = async () => {
      runs++;
      await Bun.sleep(10);
      return "r";
    };
    const subs = Array.from({ length: 20 }, () => s.submit({ client: "c", dedupKey: "k", run }));
    expect(new Set(subs.map((x) => x.op.name)).size).toBe(1);
    expect(subs.filter((x) => x.joined)).toHaveLength(19);
    await Promise.all(subs.map((x) => x.op.done));
    expect(runs).toBe(1);
    expect(s.stats().deduplicated).toBe(19);

    // After it finished, the same key starts new work (the action cache answers repeats).
    await s.submit({ client: "c", dedupKey: "k", run }).op.done;
    expect(runs).toBe(2);
    await Promise.all([s.submit({ client: "c", run }).op.done, s.submit({ client: "c", run }).op.done]);
    expect(runs).toBe(4);
  });

  test("finished operations stay findable by name for the retention period, then are forgotten", async () => {
    const clock = new ManualClock();
    const s = new Scheduler<string>({ jobs: 1, retainMs: 60_000, clock });
    const { op } = s.submit({ client: "c", run: async () => "done" });
    expect(op.name).toMatch(/^operations\/[0-9a-f-]{36}$/);
    await op.done;
    await Bun.sleep(0);
    expect(s.find(op.name)?.stage).toBe("done");
    clock.advance(59_000);
    expect(s.find(op.name)).toBeDefined();
    clock.advance(2_000);
    expect(s.find(op.name)).toBeUndefined();
    expect(s.find("operations/never")).toBeUndefined();
  });

  test("a job that throws rejects its operation and frees its slot", async () => {
    const s = new Scheduler<string>({ jobs: 1 });
    const bad = s.submit({ client: "c", run: async () => { throw new Error("boom"); } }).op;
    const good = s.submit({ client: "c", run: async () => "ok" }).op;
    await expect(bad.done).rejects.toThrow("boom");
    expect(await good.done).toBe("ok");
  });

  test("stage listeners see executing then done", async () => {
    const s = new Scheduler<string>({ jobs: 1 });
    const g = gate();
    s.submit({ client: "c", run: g.job("first") });
    const { op } = s.submit({ client: "c", run: g.job("second") });
    const seen: string[] = [];
    op.subscribe((stage) => seen.push(stage));
    await g.finish("first");
    await g.finish("second");
    expect(seen).toEqual(["executing", "done"]);
  });

  test("work that reports its own start stays queued in its slot until it says it is executing (inputs still staging)", async () => {
    const s = new Scheduler<string>({ jobs: 1 });
    let markExecuting!: () => void;
    let finish!: () => void;
    const { op } = s.submit({
      client: "c",
      reportsExecuting: true,
      run: ({ executing }) => {
        markExecuting = executing;
        return new Promise<string>((resolve) => (finish = () => resolve("ok")));
      },
    });
    await Bun.sleep(0);
    expect(s.stats().running).toBe(1);
    expect(op.stage).toBe("queued");
    markExecuting();
    expect(op.stage).toBe("executing");
    finish();
    expect(await op.done).toBe("ok");
  });
});

describe("Semaphore", () => {
  test("admits at most the limit at once, the rest in order", async () => {
    const sem = new Semaphore(2);
    let active = 0;
    let peak = 0;
    const order: number[] = [];
    await Promise.all(
      [0, 1, 2, 3, 4].map((i) =>
        sem.run(async () => {
          active++;
          peak = Math.max(peak, active);
          await Bun.sleep(5);
          order.push(i);
          active--;
        }),
      ),
    );
    expect(peak).toBe(2);
    expect(order.sort()).toEqual([0, 1, 2, 3, 4]);
  });
});
