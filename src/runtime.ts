import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { type FSWatcher, watch } from 'chokidar';
import type { GatewayConfig } from './config/schema.ts';
import { createUpstreamTlsOptions } from './config/tls.ts';
import { escapePointer, readSource } from './config/yaml.ts';
import { ConfigError, type ConfigIssue, formatIssue, ProblemError } from './errors.ts';
import type { Logger } from './logger.ts';
import { buildChain, EMPTY_CHAIN, type RouteChain, readBody, readBodyThen } from './pipeline/chain.ts';
import {
  checkRuleTargets,
  compileRules,
  type PolicyRule,
  parsePolicyFile,
  type ResolvedPolicy,
  resolvePolicies,
} from './pipeline/rules.ts';
import type { PolicyKind } from './pipeline/types.ts';
import type { MockResponder, RouteDescription, RouteTable } from './registry/index.ts';
import { buildRouteTable, createMockResponder, describeRoutes, loadServiceFile } from './registry/index.ts';
import { EXTENSION_METHOD, PASS_THROUGH_METHODS, passThroughRoute } from './registry/pass-through.ts';
import type { Route, Service } from './registry/types.ts';
import type { Store } from './state/store.ts';
import type { ForwardTarget } from './upstream/forward.ts';
import { UpstreamEvents, UpstreamGroup } from './upstream/group.ts';

/** Files loaded from the openapi and policies folders. */
const CONFIG_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);
/** Edits closer together than this are applied as one reload. */
const RELOAD_DEBOUNCE_MS = 100;
/**
 * How often the watched folders are also compared with what the last load read (names, sizes,
 * mtimes): file-system events can be lost (seen here: a spec written into a running gateway on a
 * loaded machine produced none, and it kept answering 404), and some never come (network file
 * systems, some container volume mounts). A missed change is then picked up within this time.
 */
const RESCAN_MS = 2000;
/** A replaced upstream group is closed this long after the swap, so requests still holding it finish. */
const RETIRE_AFTER_MS = 30_000;
const NO_NAMES: ReadonlySet<string> = new Set();
/** A `$ref` to another file or a URL: such a spec can change without its own file changing. */
const EXTERNAL_REF = /["']?\$ref["']?\s*:\s*["']?(?!#)/;

/** The chain of every route of a withheld service: 503, whatever the request. */
const WITHHELD_CHAIN: RouteChain = Object.freeze({
  hooks: [
    function serviceWithheld(): never {
      throw new ProblemError('PC_SERVICE_WITHHELD');
    },
  ],
  // First phase, so it runs for CORS preflights too; shown as `withheld` on /routes.
  applied: [
    {
      kind: 'withheld',
      phase: 'ipFilter',
      mode: 'enforce',
      file: 'rejected policy file',
      rule: 0,
      label: 'rejected policy file#0',
    },
  ],
}) as RouteChain;

/** What a matched route resolves to at request time; built once per route per snapshot. */
export interface RouteEntry {
  route: Route;
  service: Service;
  /** Forwarding target; absent for mock services. */
  target?: ForwardTarget;
  mock?: MockResponder;
  /** The route's policies, in phase order (EMPTY_CHAIN when none). */
  chain: RouteChain;
}

/** An immutable, fully built configuration. Requests read `runtime.snapshot` once and use only it. */
export interface Snapshot {
  table: RouteTable;
  entries: ReadonlyMap<Route, RouteEntry>;
  /** Forward targets of pass-through services, by service name. */
  passThrough: ReadonlyMap<string, ForwardTarget>;
  /**
   * What a pass-through request (a path the spec does not declare) of a service runs, by
   * `${service} ${METHOD}`: the policies of the rules that select the service as a whole (by
   * `service` and `methods` only; see passThroughRoute). Present for every method of every
   * pass-through service and for EXTENSION_METHOD, with EMPTY_CHAIN when no rule applies; looked
   * up with `passThroughEntry`.
   */
  passThroughEntries: ReadonlyMap<string, RouteEntry>;
  /** Policy rules in force (files in name order, rules in file order). */
  rules: readonly PolicyRule[];
  /** Services whose policy file was rejected with no good version: they answer 503 (sorted names). */
  withheld: readonly string[];
  version: string;
  loadedAt: Date;
}

export interface ReloadResult {
  ok: boolean;
  version: string;
  issues: ConfigIssue[];
}

/**
 * A spec or policy file the last load attempt rejected, and what serves meanwhile (/readyz lists
 * them). `last-good`: the file's last good version is in force; `not-served`: a spec with no good
 * version, its service is not routed; `withheld`: a policy file with no good version, the services
 * its rules name answer 503 until it is fixed (a failed policy never leaves a route unprotected);
 * `previous-configuration`: the whole reload was refused and the previous configuration serves.
 */
export interface RejectedFile {
  file: string;
  kind: 'spec' | 'policy';
  serving: 'last-good' | 'not-served' | 'withheld' | 'previous-configuration';
  /** Services answering 503 PC_SERVICE_WITHHELD because of this file (`withheld` only). */
  services?: string[];
  /** `file:line: path: message` of each problem. */
  errors: string[];
}

/** How a load treats a rejected file (see Runtime.load). */
export type LoadMode = 'tolerant' | 'strict';

/**
 * Holds the current snapshot and rebuilds it from the spec folder. A file that fails to load
 * keeps its last good version serving; a table that fails to build (conflicts) keeps the whole
 * previous snapshot. The swap is one assignment, so a request sees the old or the new table,
 * never a mix.
 */
export interface RuntimeOptions {
  config: GatewayConfig;
  logger: Logger;
  store: Store;
  /** Policy kinds (src/policies/index.ts). */
  kinds: readonly PolicyKind[];
  /** Start active health checks when a snapshot is swapped in. Default true (false for `validate`). */
  healthChecks?: boolean;
  /**
   * Asked before a reload's snapshot is swapped in; false keeps the previous one serving (the
   * reload counts as rejected). With `workers: N` this is the commit vote that makes every worker
   * switch to the same version together (src/cluster). Default: always swap.
   */
  beforeSwap?: (snapshot: Snapshot) => Promise<boolean>;
}

export class Runtime {
  snapshot: Snapshot | null = null;
  /** Ejections and circuit-breaker rejections of every upstream group (metrics subscribe). */
  readonly upstreamEvents = new UpstreamEvents();
  private readonly dir: string;
  private readonly policiesDir: string;
  private readonly logger: Logger;
  private readonly options: RuntimeOptions;
  private readonly lastGood = new Map<string, Service>();
  private readonly lastGoodRules = new Map<string, PolicyRule[]>();
  /** Parsed specs by file, with the hash of the content they were parsed from (see loadService). */
  private readonly parsed = new Map<string, { hash: string; service: Service }>();
  /** What the last load attempt rejected (empty when everything loaded); /readyz lists it. */
  rejected: RejectedFile[] = [];
  private readonly groups = new Map<string, UpstreamGroup>();
  private watcher: FSWatcher | undefined;
  private watching: Promise<void> | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  /** The folders as the last load attempt found them before reading them (see folderStamp). */
  private stamp: string | undefined;
  /** A watcher event came since the last load attempt started. */
  private eventSince = false;
  private pending: Promise<ReloadResult> | undefined;
  private next: Promise<ReloadResult> | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private closed = false;
  /** Replaced groups waiting out RETIRE_AFTER_MS; close() closes them at once. */
  private readonly retiring = new Set<UpstreamGroup>();
  private readonly listeners: Array<(r: ReloadResult) => void> = [];

  constructor(options: RuntimeOptions) {
    this.options = options;
    this.dir = resolve(options.config.openapi);
    this.policiesDir = resolve(options.config.policies);
    this.logger = options.logger;
  }

  /**
   * Use `config` from the next reload on (gateway.yaml's live fields changed; see config/live.ts).
   * The spec and policy folders stay those of the start.
   */
  setConfig(config: GatewayConfig): void {
    this.options.config = config;
  }

  /** Called after every reload attempt (tests, metrics). */
  onReload(listener: (r: ReloadResult) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Initial load, with the same rules as a reload (there is no last good version yet): a spec that
   * fails is left out and the others are served; a policy file that fails withholds the services its
   * rules name (they answer 503 until it is fixed). Throws ConfigError listing every problem when
   * nothing can be served safely: a failed policy file whose targets cannot be told (unparsable, or
   * a rule without `match.service`), a route table that does not build, or, with `mode: 'strict'`
   * (`start --strict`, `validate`), any problem at all.
   */
  async load(mode: LoadMode = 'tolerant'): Promise<Snapshot> {
    const { result, snapshot } = await this.attempt(mode);
    if (!snapshot) throw new ConfigError(result.issues);
    return snapshot;
  }

  /**
   * Re-read the folder and swap in the result. Reloads are serialised: a call made while one runs
   * gets the result of a fresh run started after it (the running one may have read the folder
   * before the caller's change); every call made meanwhile shares that one run.
   */
  reload(): Promise<ReloadResult> {
    if (!this.pending) return this.run();
    const after = () => {
      this.next = undefined;
      return this.run();
    };
    this.next ??= this.pending.then(after, after);
    return this.next;
  }

  /**
   * Watch the spec folder; changes take effect after RELOAD_DEBOUNCE_MS of quiet. Resolves once
   * the watcher has scanned the folder: changes made before that may be missed. Calling it again
   * returns the same promise.
   */
  watch(): Promise<void> {
    if (this.watching) return this.watching;
    // Only folders that exist: given a missing one (a gateway without policies/), chokidar 5 also
    // stopped reporting changes in the folder that does exist (a spec added to openapi/ was never
    // reloaded). A folder created later is added to the watch by the rescan below.
    const dirs = [this.dir, this.policiesDir];
    const missing = new Set(dirs.filter((d) => !existsSync(d)));
    const watcher = watch(
      dirs.filter((d) => !missing.has(d)),
      { ignoreInitial: true, depth: 4 },
    );
    this.watcher = watcher;
    const schedule = () => {
      if (this.closed) return;
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => void this.reload(), RELOAD_DEBOUNCE_MS);
    };
    watcher.on('all', () => {
      this.eventSince = true;
      schedule();
    });
    watcher.on('error', (err) => this.logger.error({ err, code: 'PC_WATCH_FAILED' }, 'spec watcher failed'));
    this.watching = new Promise((resolveReady) => watcher.once('ready', () => resolveReady()));
    // The safety net for lost events: a change the watcher did not report is reloaded anyway.
    this.rescanTimer = setInterval(() => {
      for (const d of missing) {
        if (!existsSync(d)) continue;
        missing.delete(d);
        watcher.add(d);
      }
      if (this.eventSince) return; // the watcher reported it: its reload is on the way
      void this.rescan().then((changed) => {
        if (changed && !this.pending && !this.eventSince) {
          this.logger.warn(
            { code: 'PC_WATCH_MISSED', dir: this.dir },
            'a change in the spec or policy folder came without a file-system event: reloading',
          );
          schedule();
        }
      });
    }, RESCAN_MS);
    this.rescanTimer.unref();
    return this.watching;
  }

  /**
   * Whether the spec or policy folder differs from what the last load attempt found (file names,
   * sizes, mtimes), so that a reload is due. False while a reload is running or when the
   * folders cannot be read (the reload reports that).
   */
  async rescan(): Promise<boolean> {
    if (this.closed || this.pending || this.stamp === undefined) return false;
    const before = this.stamp;
    const now = await folderStamp([this.dir, this.policiesDir]).catch(() => undefined);
    return now !== undefined && now !== before && this.stamp === before && !this.pending;
  }

  /** Stop watching, let a running reload finish, and close every upstream pool (waiting for their in-flight requests). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.debounce);
    clearInterval(this.rescanTimer);
    await this.watcher?.close();
    // A reload finishing after this point would open pools nobody closes.
    await (this.next ?? this.pending)?.catch(() => undefined);
    const groups = [...this.groups.values(), ...this.retiring];
    this.groups.clear();
    this.retiring.clear();
    await Promise.all(groups.map((g) => g.close()));
  }

  /**
   * Load one spec, reusing the Service parsed from the same content before: an unchanged spec keeps
   * its Service and Route objects across reloads (so nothing keyed by them, such as compiled
   * validators, is rebuilt). Specs with external `$ref`s or an upstream CA file are parsed again
   * every time: what they depend on can change without their own file changing.
   */
  private async loadService(file: string): Promise<Service> {
    const text = await readFile(file).catch(() => undefined);
    const hash = text && createHash('sha256').update(text).digest('hex');
    const cached = this.parsed.get(file);
    if (hash && cached?.hash === hash) return cached.service;
    const service = await loadServiceFile(file);
    if (hash && !EXTERNAL_REF.test(text.toString('utf8')) && !service.settings.tls.ca)
      this.parsed.set(file, { hash, service });
    else this.parsed.delete(file);
    return service;
  }

  private run(): Promise<ReloadResult> {
    const pending = this.attempt('reload')
      .then(({ result }) => result)
      .finally(() => {
        if (this.pending === pending) this.pending = undefined;
      });
    this.pending = pending;
    return pending;
  }

  /**
   * One load attempt, the same for start and reload (start has no last good versions). Swaps in
   * the new snapshot when there is one; `rejected` lists what the attempt refused.
   */
  private async attempt(mode: LoadMode | 'reload'): Promise<{ result: ReloadResult; snapshot?: Snapshot }> {
    const previousVersion = this.snapshot?.version ?? '';
    if (this.closed) return { result: { ok: false, version: previousVersion, issues: [] } };
    const rejected: RejectedFile[] = [];
    const refuse = (issues: ConfigIssue[], message: string) => {
      if (mode === 'reload') this.logger.error(`${message}; the previous configuration keeps serving`);
      const files = new Set(issues.map((i) => i.file));
      const listed = new Set(rejected.map((r) => r.file));
      for (const file of files)
        if (!listed.has(file))
          rejected.push({ file, kind: 'policy', serving: 'previous-configuration', errors: [] });
      for (const r of rejected) {
        r.serving = 'previous-configuration';
        r.errors = issues.filter((i) => i.file === r.file).map(formatIssue);
      }
      this.rejected = rejected;
      const result = { ok: false, version: previousVersion, issues };
      this.emit(result);
      return { result };
    };
    // Stamped before reading: a change made while this attempt reads is seen by the next rescan.
    this.eventSince = false;
    this.stamp = await folderStamp([this.dir, this.policiesDir]).catch(() => '');
    let files: string[];
    try {
      files = await listConfigFiles(this.dir);
    } catch (cause) {
      // A folder that is briefly missing (replaced by a deploy) must not unroute every service.
      const issue = {
        file: this.dir,
        path: '',
        message: `cannot read spec folder: ${(cause as Error).message}`,
      };
      this.logger.error({ code: 'PC_CONFIG_INVALID', file: this.dir }, formatIssue(issue));
      rejected.push({ file: this.dir, kind: 'spec', serving: 'previous-configuration', errors: [] });
      return refuse([issue], 'spec folder unreadable');
    }
    const issues: ConfigIssue[] = [];
    const services: Service[] = [];
    const loaded = new Map<string, Service>();
    /** Names of the services whose spec failed with no good version: not routed. */
    const missing = new Set<string>();
    for (const file of files) {
      try {
        const service = await this.loadService(file);
        services.push(service);
        loaded.set(file, service);
      } catch (err) {
        const fileIssues = issuesOf(err, file);
        issues.push(...fileIssues);
        const previous = this.lastGood.get(file);
        for (const i of fileIssues)
          this.logger.error({ code: 'PC_CONFIG_INVALID', file: i.file }, formatIssue(i));
        this.logger.error(
          { file },
          previous
            ? 'spec rejected; its last good version keeps serving'
            : 'spec rejected; its service is not served',
        );
        if (previous) services.push(previous);
        else missing.add(basename(file, extname(file)));
        rejected.push({
          file,
          kind: 'spec',
          serving: previous ? 'last-good' : 'not-served',
          errors: fileIssues.map(formatIssue),
        });
      }
    }
    const policies = await this.reloadPolicies(issues, services, missing, rejected);
    if (mode === 'strict' && issues.length > 0) return refuse(issues, 'configuration rejected');
    if (policies.undecidable.length > 0)
      return refuse(issues, 'a rejected policy file names no service its rules protect');
    let snapshot: Snapshot;
    try {
      if (policies.stale.length > 0) throw new ConfigError(policies.stale);
      snapshot = await this.build(services, policies.rules, policies.withheld);
    } catch (err) {
      const reported = new Set(issues.map(formatIssue));
      const buildIssues = issuesOf(err, this.dir).filter((i) => !reported.has(formatIssue(i)));
      for (const i of buildIssues) this.logger.error({ code: 'PC_CONFIG_INVALID' }, formatIssue(i));
      return refuse([...issues, ...buildIssues], 'configuration rejected');
    }
    // The start is not voted: each worker loads the files the primary loaded before forking it.
    if (mode === 'reload' && this.options.beforeSwap && !(await this.options.beforeSwap(snapshot))) {
      this.restoreGroups();
      const issue = {
        file: this.dir,
        path: '',
        message: `version ${snapshot.version} was not committed by every worker`,
      };
      this.logger.error(
        { code: 'PC_CONFIG_INVALID' },
        `${issue.message}; the previous configuration keeps serving`,
      );
      const result = { ok: false, version: this.snapshot?.version ?? '', issues: [...issues, issue] };
      this.emit(result);
      return { result };
    }
    for (const file of this.lastGood.keys()) if (!files.includes(file)) this.lastGood.delete(file);
    for (const [file, s] of loaded) this.lastGood.set(file, s);
    this.lastGoodRules.clear();
    for (const [file, rules] of policies.byFile) this.lastGoodRules.set(file, rules);
    const changed = snapshot.version !== this.snapshot?.version;
    const initial = this.snapshot === null;
    this.swap(snapshot);
    this.rejected = rejected;
    if (changed && !initial)
      this.logger.info(
        { version: snapshot.version, services: snapshot.table.services.size },
        'configuration reloaded',
      );
    const result = { ok: issues.length === 0, version: snapshot.version, issues };
    this.emit(result);
    return { result, snapshot };
  }

  private emit(result: ReloadResult): void {
    for (const l of this.listeners) l(result);
  }

  /** Build a snapshot; reuses the upstream group of every service whose upstream config is unchanged. */
  private async build(
    services: Service[],
    rules: PolicyRule[],
    withheld: ReadonlySet<string> = NO_NAMES,
  ): Promise<Snapshot> {
    const table = buildRouteTable(services);
    const compiled = compileRules(rules);
    const { config, store, logger, kinds } = this.options;
    const entries = new Map<Route, RouteEntry>();
    const passThrough = new Map<string, ForwardTarget>();
    const passThroughEntries = new Map<string, RouteEntry>();
    const used = new Set<string>();
    for (const service of table.services.values()) {
      if (withheld.has(service.name)) {
        // Its policy file was rejected with no good version: every request gets 503, nothing is forwarded.
        for (const route of service.routes) entries.set(route, { route, service, chain: WITHHELD_CHAIN });
        if (service.settings.passThrough && !service.settings.mock)
          for (const m of PASSED_METHODS) {
            const route = passThroughRoute(service, m);
            passThroughEntries.set(`${service.name} ${m}`, { route, service, chain: WITHHELD_CHAIN });
          }
        continue;
      }
      let target: ForwardTarget | undefined;
      if (!service.settings.mock) {
        const key = `${service.name}\0${service.upstreamKey}`;
        used.add(key);
        let group = this.groups.get(key);
        if (!group) {
          const connect =
            service.settings.tls.ca ||
            !service.settings.tls.rejectUnauthorized ||
            service.settings.tls.servername
              ? await createUpstreamTlsOptions(service.settings.tls)
              : undefined;
          // A changed upstream block: the same URLs keep their health, ejections and in-flight counts.
          const previous = [...this.groups].find(([k]) => k.startsWith(`${service.name}\0`))?.[1];
          group = new UpstreamGroup(service.name, service.settings, {
            logger: this.logger,
            connect,
            zone: config.zone,
            events: this.upstreamEvents,
            previous,
          });
          this.groups.set(key, group);
        }
        const basePath = service.settings.basePath === '/' ? '' : service.settings.basePath;
        target = { service: service.name, group, settings: service.settings, basePath };
        if (service.settings.passThrough) passThrough.set(service.name, target);
      }
      const routePolicies = service.routes.map((route) => resolvePolicies(route, compiled, kinds));
      // The routes standing for a pass-through service's undeclared paths, one per method; validate
      // has no operation to check an undeclared path against: it applies to declared ones.
      const passRoutes =
        target && service.settings.passThrough ? PASSED_METHODS.map((m) => passThroughRoute(service, m)) : [];
      const passPolicies = passRoutes.map((route) =>
        resolvePolicies(route, compiled, kinds).filter((p) => p.kind.name !== 'validate'),
      );
      const identityHeaders = new Set<string>();
      for (const resolved of [...routePolicies, ...passPolicies])
        for (const p of resolved)
          for (const h of p.kind.identityHeaders?.(p.config) ?? []) identityHeaders.add(h);
      // Stripped on every route of the service and its pass-through (see ForwardTarget.identityHeaders).
      if (target && identityHeaders.size > 0) target.identityHeaders = identityHeaders;
      const chainOf = (resolved: ResolvedPolicy[], route: Route): Promise<RouteChain> | RouteChain =>
        resolved.length === 0
          ? EMPTY_CHAIN
          : buildChain(resolved, {
              config,
              store,
              logger,
              route,
              service,
              // A policy's own read never goes past the gateway's body limit.
              readBody: (ctx, max) => readBody(ctx, Math.min(max, config.limits.bodyBytes)),
              readBodyThen: (ctx, max, then) =>
                readBodyThen(ctx, Math.min(max, config.limits.bodyBytes), then),
            });
      for (const [i, route] of service.routes.entries()) {
        entries.set(route, {
          route,
          service,
          target,
          mock: service.settings.mock ? createMockResponder(route) : undefined,
          chain: await chainOf(routePolicies[i] ?? [], route),
        });
      }
      for (const [i, route] of passRoutes.entries()) {
        const chain = await chainOf(passPolicies[i] ?? [], route);
        passThroughEntries.set(`${service.name} ${route.method}`, { route, service, target, chain });
      }
    }
    // Groups no longer referenced retire after in-flight requests had time to finish.
    for (const [key, group] of this.groups) {
      if (used.has(key)) continue;
      this.groups.delete(key);
      group.retire();
      this.retiring.add(group);
      setTimeout(() => {
        if (this.retiring.delete(group)) void group.close();
      }, RETIRE_AFTER_MS).unref();
    }
    const version =
      rules.length === 0 && withheld.size === 0
        ? table.version
        : `${table.version.slice(0, 20)}${rulesHash(rules, withheld)}`;
    return {
      table,
      entries,
      passThrough,
      passThroughEntries,
      rules,
      withheld: [...withheld].sort(),
      version,
      loadedAt: new Date(),
    };
  }

  /**
   * Re-read the policy folder. A file that fails (schema, or a `match` naming what `services` lack
   * or selecting nothing) keeps its last good rules (its issues are added to `issues` and logged).
   * With no last good version (at start, or a new file), the services its rules name are
   * `withheld` (answer 503) until it is fixed; when its rules do not all name their services
   * (unparsable file, a rule without `match.service`), its issues come back as `undecidable` and
   * the caller serves nothing new (start refuses, a reload keeps the previous configuration).
   * A last good version is checked again against `services`: where a spec change made one of its
   * rules name a missing operation, tag or path, or select nothing, applying the reload could leave
   * a route without its protection, so those issues come back as `stale` and the caller keeps the
   * whole previous snapshot. A rule naming a service that is gone, or whose spec was rejected
   * (`missing`), stays in force: it selects nothing of that service, and protects the others it
   * names as before.
   */
  private async reloadPolicies(
    issues: ConfigIssue[],
    services: readonly Service[],
    missing: ReadonlySet<string>,
    rejectedFiles: RejectedFile[],
  ): Promise<LoadedPolicies & { stale: ConfigIssue[]; undecidable: ConfigIssue[]; withheld: Set<string> }> {
    const loaded = await loadPolicies(this.policiesDir, this.options.kinds);
    const rejected = [
      ...loaded.issues,
      ...checkRuleTargets([...loaded.byFile.values()].flat(), services)
        .filter((p) => !(p.service !== undefined && missing.has(p.service)))
        .map((p) => p.issue),
    ];
    const withheld = new Set<string>();
    const undecidable: ConfigIssue[] = [];
    if (rejected.length === 0) return { ...loaded, stale: [], undecidable, withheld };
    issues.push(...rejected);
    const failed = new Set(rejected.map((i) => i.file));
    for (const i of rejected) this.logger.error({ code: 'PC_CONFIG_INVALID', file: i.file }, formatIssue(i));
    const byFile = new Map(loaded.byFile);
    const kept: PolicyRule[] = [];
    for (const file of failed) {
      const previous = this.lastGoodRules.get(file);
      const errors = rejected.filter((i) => i.file === file).map(formatIssue);
      if (previous) {
        this.logger.error({ file }, 'policy file rejected; its last good version stays in force');
        byFile.set(file, previous);
        kept.push(...previous);
        rejectedFiles.push({ file, kind: 'policy', serving: 'last-good', errors });
        continue;
      }
      byFile.delete(file);
      const targets = await policyTargets(file);
      if (!targets) {
        this.logger.error(
          { file },
          'policy file rejected; its rules do not all name their services, so nothing it may protect can be served',
        );
        undecidable.push(...rejected.filter((i) => i.file === file));
        rejectedFiles.push({ file, kind: 'policy', serving: 'previous-configuration', errors });
        continue;
      }
      const names = [...targets].filter((n) => services.some((s) => s.name === n)).sort();
      for (const n of names) withheld.add(n);
      this.logger.error(
        { file, services: names },
        'policy file rejected; the services it protects are withheld (503) until it is fixed',
      );
      rejectedFiles.push({ file, kind: 'policy', serving: 'withheld', services: names, errors });
    }
    const stale = checkRuleTargets(kept, services)
      .filter((p) => !p.unknownService)
      .map((p) => p.issue);
    const ordered = [...byFile.keys()].sort();
    return {
      byFile,
      rules: ordered.flatMap((f) => byFile.get(f) ?? []),
      issues: rejected,
      stale,
      undecidable,
      withheld,
    };
  }

  /**
   * After a snapshot was built but not swapped in: the groups of the one still serving come back
   * from retirement, the groups built for the discarded one close.
   */
  private restoreGroups(): void {
    const serving = new Map<string, UpstreamGroup>();
    for (const e of this.snapshot?.entries.values() ?? [])
      if (e.target) serving.set(`${e.service.name}\0${e.service.upstreamKey}`, e.target.group);
    for (const [key, group] of this.groups) {
      if (serving.get(key) === group) continue;
      this.groups.delete(key);
      void group.close();
    }
    for (const [key, group] of serving) {
      this.retiring.delete(group);
      this.groups.set(key, group);
      // Retiring stopped its active checks (UpstreamGroup.retire): it serves on, so they resume.
      if (this.options.healthChecks !== false) group.start();
    }
  }

  private swap(snapshot: Snapshot): void {
    if (this.options.healthChecks !== false)
      for (const e of snapshot.entries.values()) e.target?.group.start();
    this.snapshot = snapshot;
  }
}

/** Load every spec of a folder; a file that fails adds its issues and is left out. */
export async function loadSpecs(dir: string): Promise<{ services: Service[]; issues: ConfigIssue[] }> {
  let files: string[];
  try {
    files = await listConfigFiles(dir);
  } catch (cause) {
    return {
      services: [],
      issues: [{ file: dir, path: '', message: `cannot read spec folder: ${(cause as Error).message}` }],
    };
  }
  const services: Service[] = [];
  const issues: ConfigIssue[] = [];
  for (const file of files) {
    try {
      services.push(await loadServiceFile(file));
    } catch (err) {
      issues.push(...issuesOf(err, file));
    }
  }
  return { services, issues };
}

export interface LoadedPolicies {
  /** Rules of every valid file, files in name order. */
  rules: PolicyRule[];
  byFile: Map<string, PolicyRule[]>;
  issues: ConfigIssue[];
}

/** Load every policy file of a folder (a missing folder = no policies). */
export async function loadPolicies(dir: string, kinds: readonly PolicyKind[]): Promise<LoadedPolicies> {
  let files: string[];
  try {
    files = await listConfigFiles(dir);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT')
      return { rules: [], byFile: new Map(), issues: [] };
    return {
      rules: [],
      byFile: new Map(),
      issues: [{ file: dir, path: '', message: `cannot read policy folder: ${(cause as Error).message}` }],
    };
  }
  const byFile = new Map<string, PolicyRule[]>();
  const issues: ConfigIssue[] = [];
  for (const file of files) {
    try {
      byFile.set(file, parsePolicyFile(await readSource(file), kinds, dirname(file)));
    } catch (err) {
      issues.push(...issuesOf(err, file));
    }
  }
  return { rules: [...byFile.values()].flat(), byFile, issues };
}

/**
 * Operations whose spec declares `security` (their own, or the document's they inherit; an
 * explicit `security: []` and requirements that are all `{}` declare none) but that no enforcing
 * auth policy covers: the gateway would forward them unauthenticated. For `validate`, which reports
 * them as warnings (errors with --strict). Each issue points at the operation's `security` in the
 * spec, or at the operation when it inherits the document's.
 */
/** The methods a pass-through service's undeclared paths are served for, each with its own entry. */
const PASSED_METHODS = [...PASS_THROUGH_METHODS, EXTENSION_METHOD];

/**
 * The entry serving a `method` request for `path` on pass-through `service`, a path its spec does
 * not declare: the method's entry, or for an extension method (PROPFIND, M-SEARCH, any token but
 * CONNECT) the service's EXTENSION_METHOD entry. Undefined (answered 405 with Allow) when the spec
 * declares the path, whatever the method: a declared path keeps its declared methods, as on any
 * other service. Undefined also for CONNECT.
 */
export function passThroughEntry(
  snapshot: Snapshot,
  service: Service,
  method: string,
  path: string,
): RouteEntry | undefined {
  // A path the spec declares keeps its methods: any other method on it is 405, standard or not.
  if (method === 'CONNECT' || snapshot.table.declares(path)) return undefined;
  return (
    snapshot.passThroughEntries.get(`${service.name} ${method}`) ??
    snapshot.passThroughEntries.get(`${service.name} ${EXTENSION_METHOD}`)
  );
}

export function findUncoveredSecurity(snapshot: Snapshot): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const { route, service, chain } of snapshot.entries.values()) {
    const own = route.operation.security;
    const requirements = own ?? service.document.security ?? [];
    if (!requirements.some((r) => Object.keys(r).length > 0)) continue;
    const auth = chain.applied.find((p) => p.kind === 'auth');
    if (auth?.mode === 'enforce') continue;
    const operation = `/paths/${escapePointer(route.specPath)}/${route.method.toLowerCase()}`;
    const declared = own ? 'declares security' : "inherits the document's security";
    const why = auth ? 'only a dry-run auth policy covers it' : 'no auth policy covers it';
    issues.push({
      file: service.file,
      path: own ? `${operation}/security` : operation,
      message: `operation ${route.operationId} ${declared} but ${why}: the gateway lets it through unauthenticated`,
    });
  }
  return issues;
}

/** A route as `/routes` and `portcullis routes --json` show it: the table row plus its policies, in phase order. */
export type RouteRow = RouteDescription & { policies: RouteChain['applied'] };

/** The route table of a snapshot with each route's policies (pass-through routes are not listed). */
export function describeSnapshot(snapshot: Snapshot): RouteRow[] {
  const applied = new Map<string, RouteChain['applied']>();
  for (const e of snapshot.entries.values())
    applied.set(`${e.route.service} ${e.route.operationId}`, e.chain.applied);
  return describeRoutes(snapshot.table).map((r) => ({
    ...r,
    policies: applied.get(`${r.service} ${r.operationId}`) ?? [],
  }));
}

/**
 * The services a policy file's rules name, read from its raw YAML; undefined when that cannot be
 * told: the file does not parse, is not a list, or a rule has no `match.service` (string or list of
 * strings), so it may select routes of any service.
 */
async function policyTargets(file: string): Promise<Set<string> | undefined> {
  let value: unknown;
  try {
    value = (await readSource(file)).value;
  } catch {
    return undefined;
  }
  if (!Array.isArray(value)) return undefined;
  const names = new Set<string>();
  for (const rule of value) {
    const service = (rule as { match?: { service?: unknown } } | null)?.match?.service;
    const listed = Array.isArray(service) ? service : [service];
    if (listed.length === 0 || !listed.every((n): n is string => typeof n === 'string' && n !== ''))
      return undefined;
    for (const n of listed) names.add(n);
  }
  return names;
}

function rulesHash(rules: readonly PolicyRule[], withheld: ReadonlySet<string>): string {
  return createHash('sha1')
    .update(JSON.stringify([rules.map((r) => [r.file, r.match, r.policies]), [...withheld].sort()]))
    .digest('hex')
    .slice(0, 20);
}

/** The YAML/JSON files of a folder (specs or policies), sorted: load order is deterministic. */
export async function listConfigFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  return names
    .filter((n) => CONFIG_EXTENSIONS.has(extname(n).toLowerCase()) && !n.startsWith('.'))
    .sort()
    .map((n) => join(dir, n));
}

function issuesOf(err: unknown, file: string): ConfigIssue[] {
  if (err instanceof ConfigError) return err.issues;
  return [{ file, path: '', message: (err as Error).message ?? String(err) }];
}

/**
 * Every entry under `dirs` (recursively) with its size and mtime, as one string: equal stamps mean
 * nothing a load reads has changed (an edit that keeps size and mtime to the millisecond aside).
 */
export async function folderStamp(dirs: readonly string[]): Promise<string> {
  const parts: string[] = [];
  for (const dir of dirs) {
    // A folder that does not exist (no policies/ yet) is a state too: its creation is a change.
    const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    });
    if (entries === undefined) {
      parts.push(`${dir}\0absent`);
      continue;
    }
    const stamped = await Promise.all(
      entries.map(async (e) => {
        const file = join(e.parentPath, e.name);
        const st = await stat(file).catch(() => undefined);
        return st ? `${file}\0${st.size}\0${st.mtimeMs}` : `${file}\0-`;
      }),
    );
    parts.push(...stamped);
  }
  return parts.sort().join('\n');
}
