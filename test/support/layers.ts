import { readdirSync } from "node:fs";
import { join, posix } from "node:path";
import ts from "typescript";

/**
 * The layers, top down: the one source of truth (test/unit/layers.test.ts checks the tree and
 * docs/architecture.md's table against it). Ranks are distinct; a file imports its own folder,
 * any folder of a lower layer, or a folder of its own layer along a declared `siblings` edge.
 * `platform` layers alone may import the platform packages (PLATFORM).
 */
export interface Layer {
  name: string;
  rank: number;
  /** Repository folders, each ending in "/"; a folder's unlisted subfolders are part of it. */
  folders: string[];
  platform?: true;
  /** Each folder under it is an application of its own: it imports its folder and API_MODULE. */
  applications?: true;
  /** Same-layer imports allowed, `from` folder → `to` folder, with why. */
  siblings?: { from: string; to: string; why: string }[];
}

export const LAYERS: Layer[] = [
  { name: "tests", rank: 20, folders: ["test/"], platform: true },
  // bench/floor.ts measures the bundles the tests check the size of.
  { name: "bench", rank: 19, folders: ["bench/"], platform: true },
  // Below bench: the soak and outbound runs start the test homeserver.
  { name: "test support", rank: 18, folders: ["test/support/"], platform: true },
  { name: "scripts", rank: 17, folders: ["scripts/"], platform: true },
  { name: "infra", rank: 16, folders: ["infra/"], platform: true },
  // Above the handlers: it runs them (and reads their body limit) behind its HTTP server.
  { name: "local", rank: 15, folders: ["functions/local/"], platform: true },
  { name: "handlers", rank: 14, folders: ["functions/handlers/"], platform: true },
  // Below the handlers: it owns the dependency types the handlers take, and builds them.
  { name: "wiring", rank: 13, folders: ["functions/wiring/"], platform: true },
  { name: "applications", rank: 12, folders: ["functions/applications/"], applications: true },
  // Above the console's core: it implements the console's log and queue-age reads in AWS.
  { name: "console adapters", rank: 11, folders: ["functions/cloudwatch/"], platform: true },
  { name: "operator console", rank: 10, folders: ["functions/operator/"] },
  { name: "pipeline", rank: 9, folders: ["functions/appservice/pipeline/"] },
  { name: "application API", rank: 8, folders: ["functions/appservice/"] },
  // End-to-end encryption: below the appservice (its pipeline decrypts), above the wire types it
  // reads and the stores it keeps its state in (docs/encryption.md).
  { name: "crypto", rank: 7, folders: ["functions/crypto/"] },
  { name: "protocol", rank: 6, folders: ["functions/appservice/protocol/"] },
  // Above client-server and remote: it decides on each queued message and hands a call on the
  // homeserver to the one and a delivery to the other.
  { name: "outbox", rank: 5, folders: ["functions/outbox/"] },
  { name: "client-server", rank: 4, folders: ["functions/matrix/"] },
  // Below client-server: the application's actions queue deliveries, checked here.
  { name: "remote", rank: 3, folders: ["functions/remote/"] },
  {
    name: "adapters",
    rank: 2,
    folders: ["functions/store/dynamodb/", "functions/queue/sqs/"],
    platform: true,
  },
  { name: "ports", rank: 1, folders: ["functions/store/", "functions/queue/"] },
  { name: "shared", rank: 0, folders: ["functions/shared/"] },
];

export const API_MODULE = "functions/appservice/api.ts";

/** Packages that tie code to AWS or the Lambda runtime: adapters and edges only. */
export const PLATFORM =
  /^(?:@aws-sdk\/|@aws-lambda-powertools\/|@middy\/|aws-lambda$|aws-cdk-lib|constructs$|cdk-nag$|aws-sdk-client-mock$)/;

/**
 * Files that load modules by a computed name, and the folders those loads may reach (checked as
 * imports). Any other computed load is refused: the checker could not see where it goes.
 */
export const LOADERS: Record<string, { reaches: string[]; why: string }> = {
  "functions/local/applications.ts": {
    reaches: ["functions/applications/"],
    why: "local mode loads the application chosen by name (APPLICATION=)",
  },
  "functions/local/workers.ts": {
    reaches: ["functions/local/", "functions/applications/"],
    why: "worker threads start from its own entry files and the application's parts",
  },
  "test/integration/lambda-entries.test.ts": {
    reaches: ["functions/handlers/"],
    why: "it loads each function's entry the way Lambda does",
  },
  "test/unit/bundles.test.ts": {
    reaches: ["functions/applications/"],
    why: "it loads each application's parts by name",
  },
  "infra/application.ts": {
    reaches: ["functions/applications/"],
    why: "the CDK app reads the chosen application's manifest (-c application=)",
  },
};

/**
 * Source files of the repository's root, in no layer: tools' configuration, which may import
 * packages and nothing of ours.
 */
export const ROOT_FILES: Record<string, string> = {
  "vitest.config.ts": "the test runner's projects and reporters",
};

const MODULE_EXTENSION = /\.(?:[cm]?[jt]sx?)$/;

/** Folders of a checkout that hold none of our source: installed, generated, or hidden. */
const NOT_SOURCE = new Set(["node_modules", "cdk.out", "coverage"]);

/**
 * Every source file of the checkout at `root`, by repository path: any folder's, so that a file
 * in a folder no layer lists is found (and refused), not skipped.
 */
export function sourceFiles(root: string, folder = ""): string[] {
  return readdirSync(join(root, folder), { withFileTypes: true }).flatMap((entry) => {
    const path = posix.join(folder, entry.name);
    if (entry.isDirectory()) {
      return NOT_SOURCE.has(entry.name) || entry.name.startsWith(".")
        ? []
        : sourceFiles(root, path);
    }
    return entry.isFile() && MODULE_EXTENSION.test(entry.name) ? [path] : [];
  });
}

/** How a file refers to another module. */
export interface Reference {
  specifier: string;
  /** `literal`: a string the checker resolves; `computed`: a template or an expression. */
  kind: "literal" | "computed";
  /**
   * `url`: `new URL(…, import.meta.url)`, relative to the file, possibly a folder or data;
   * `worker`: a worker thread's path or eval'd code's import, relative to the working directory
   * (the repository's root, where every entry runs), as Node resolves them.
   */
  via: "import" | "url" | "worker";
}

/** The strings a specifier can be: a literal, or either literal of `a ? "x" : "y"`. */
const stringsOf = (node: ts.Node | undefined): string[] | undefined => {
  if (!node) return undefined;
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return [node.text];
  if (ts.isParenthesizedExpression(node)) return stringsOf(node.expression);
  if (ts.isConditionalExpression(node)) {
    const [yes, no] = [stringsOf(node.whenTrue), stringsOf(node.whenFalse)];
    return yes && no ? [...yes, ...no] : undefined;
  }
  return undefined;
};

const isImportMetaUrl = (node: ts.Node | undefined): boolean =>
  !!node &&
  ts.isPropertyAccessExpression(node) &&
  node.name.text === "url" &&
  ts.isMetaProperty(node.expression) &&
  node.expression.keywordToken === ts.SyntaxKind.ImportKeyword;

const isImportMetaResolve = (node: ts.Node): boolean =>
  ts.isPropertyAccessExpression(node) &&
  node.name.text === "resolve" &&
  ts.isMetaProperty(node.expression) &&
  node.expression.keywordToken === ts.SyntaxKind.ImportKeyword;

const isNewUrlOfModule = (node: ts.Node | undefined): node is ts.NewExpression =>
  !!node &&
  ts.isNewExpression(node) &&
  ts.isIdentifier(node.expression) &&
  node.expression.text === "URL" &&
  isImportMetaUrl(node.arguments?.[1]);

/** `new Worker(…)` or `new threads.Worker(…)`. */
const isNewWorker = (node: ts.Node): node is ts.NewExpression =>
  ts.isNewExpression(node) &&
  (ts.isIdentifier(node.expression) || ts.isPropertyAccessExpression(node.expression)) &&
  (ts.isIdentifier(node.expression) ? node.expression : node.expression.name).text === "Worker";

/** Whether a `new Worker` options literal says `eval: true`: its first argument is code. */
const evalsCode = (options: ts.Node | undefined): boolean =>
  !!options &&
  ts.isObjectLiteralExpression(options) &&
  options.properties.some(
    (property) =>
      ts.isPropertyAssignment(property) &&
      property.name.getText() === "eval" &&
      property.initializer.kind === ts.SyntaxKind.TrueKeyword,
  );

/** What stands in eval'd code for a URL the file made from a literal (checked where made). */
const CHECKED_URL = "__checkedUrl__";

const isCreateRequireCall = (node: ts.Node | undefined): boolean =>
  !!node &&
  ts.isCallExpression(node) &&
  ts.isIdentifier(node.expression) &&
  node.expression.text === "createRequire";

/**
 * Every module reference of a source, read from its syntax tree (so text inside strings is not
 * mistaken for one): static, type-only and re-exports, `import()`, `import("…")` types,
 * `require()` (and the functions `createRequire` makes, whatever their name),
 * `import.meta.resolve()`, `new URL(…, import.meta.url)`, and worker threads: `new Worker(path)`,
 * and the imports of `new Worker(code, { eval: true })`'s code.
 */
export function references(file: string, source: string): Reference[] {
  const found: Reference[] = [];
  /** Names bound to `createRequire(…)`: `const load = createRequire(import.meta.url)`. */
  const requires = new Set(["require"]);
  /** Names bound to `new URL(…, import.meta.url)`: reported where bound, passed to a worker. */
  const urls = new Set<string>();
  const add = (argument: ts.Node | undefined, via: Reference["via"]) => {
    const texts = stringsOf(argument);
    if (!texts) found.push({ specifier: argument?.getText(tree) ?? "", kind: "computed", via });
    else for (const specifier of texts) found.push({ specifier, kind: "literal", via });
  };
  const tree = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, true);
  const bindRequires = (node: ts.Node): void => {
    if (
      ts.isVariableDeclaration(node) &&
      ts.isIdentifier(node.name) &&
      isCreateRequireCall(node.initializer)
    ) {
      requires.add(node.name.text);
    }
    if (
      ts.isVariableDeclaration(node) &&
      ts.isIdentifier(node.name) &&
      isNewUrlOfModule(node.initializer)
    ) {
      urls.add(node.name.text);
    }
    ts.forEachChild(node, bindRequires);
  };
  bindRequires(tree);
  const isUrlName = (node: ts.Node): boolean => ts.isIdentifier(node) && urls.has(node.text);
  // `${JSON.stringify(url.href)}`, `${url.href}`, `${url}`: a URL the file made from a literal.
  const namesCheckedUrl = (node: ts.Node): boolean => {
    if (
      ts.isCallExpression(node) &&
      node.expression.getText(tree) === "JSON.stringify" &&
      node.arguments.length === 1
    ) {
      return namesCheckedUrl(node.arguments[0] as ts.Node);
    }
    if (ts.isPropertyAccessExpression(node) && node.name.text === "href") {
      return isUrlName(node.expression);
    }
    return isUrlName(node);
  };
  /** A worker's path: `./` or `../` from the working directory; absolute, it is not followed. */
  const addWorkerPath = (path: ts.Node | undefined) => {
    const relative = stringsOf(path)?.every((text) => /^\.\.?\//.test(text));
    if (relative) add(path, "worker");
    else found.push({ specifier: path?.getText(tree) ?? "", kind: "computed", via: "worker" });
  };
  /** Eval'd code's own references, each relative to the working directory. */
  const addEvalCode = (code: ts.Node | undefined) => {
    let text = stringsOf(code)?.join("\n");
    if (text === undefined && code && ts.isTemplateExpression(code)) {
      if (!code.templateSpans.every((span) => namesCheckedUrl(span.expression))) {
        return add(code, "worker");
      }
      text =
        code.head.text + code.templateSpans.map((span) => CHECKED_URL + span.literal.text).join("");
    }
    if (text === undefined) return add(code, "worker");
    for (const reference of references(`${file}:eval`, text)) {
      if (reference.specifier !== CHECKED_URL) found.push({ ...reference, via: "worker" });
    }
  };
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      add(node.moduleSpecifier, "import");
    } else if (ts.isImportEqualsDeclaration(node)) {
      if (ts.isExternalModuleReference(node.moduleReference)) {
        add(node.moduleReference.expression, "import");
      }
    } else if (ts.isImportTypeNode(node)) {
      const argument = node.argument;
      add(ts.isLiteralTypeNode(argument) ? argument.literal : argument, "import");
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      if (
        callee.kind === ts.SyntaxKind.ImportKeyword ||
        (ts.isIdentifier(callee) && requires.has(callee.text)) ||
        isCreateRequireCall(callee) ||
        isImportMetaResolve(callee)
      ) {
        add(node.arguments[0], "import");
      }
    } else if (isNewUrlOfModule(node)) {
      add(node.arguments?.[0], "url");
    } else if (isNewWorker(node)) {
      const [start, options] = node.arguments ?? [];
      if (evalsCode(options)) addEvalCode(start);
      else if (!(start && (isNewUrlOfModule(start) || isUrlName(start)))) addWorkerPath(start);
    }
    ts.forEachChild(node, visit);
  };
  visit(tree);
  return found;
}

/** The folder that places a path (the longest listed prefix; an application's own folder). */
export function folderOf(path: string, layers = LAYERS) {
  let best: { layer: Layer; folder: string } | undefined;
  for (const layer of layers) {
    for (const folder of layer.folders) {
      if (path.startsWith(folder) && folder.length > (best?.folder.length ?? 0)) {
        best = { layer, folder };
      }
    }
  }
  if (best?.layer.applications) {
    const own = new RegExp(`^${best.folder}[^/]+/`).exec(path)?.[0];
    if (own) return { ...best, folder: own };
  }
  return best;
}

export interface Tree {
  /** Repository path → source. */
  files: Record<string, string>;
  /** package.json's "imports" (`#application` → its manifest). */
  packageImports?: Record<string, string>;
}

/** Every break of the layer rule in a set of files, as readable lines. */
export function layerViolations({ files, packageImports = {} }: Tree): string[] {
  const violations: string[] = [];
  const folderEdges = new Map<string, Set<string>>();
  const fileEdges = new Map<string, Set<string>>();

  const check = (file: string, target: string, how: string) => {
    const from = folderOf(file);
    const to = folderOf(target);
    const edge = `${file} ${how} ${target}`;
    if (!from) return;
    if (!to) return void violations.push(`${edge}, which is in no layer`);
    if (to.folder === from.folder) {
      fileEdges.get(file)?.add(target);
      return;
    }
    if (from.layer.applications && target !== API_MODULE) {
      return void violations.push(`${edge}: an application imports ${API_MODULE} alone`);
    }
    if (to.layer.rank > from.layer.rank) {
      violations.push(`${edge}: ${from.layer.name} may not import ${to.layer.name} (above it)`);
    } else if (
      to.layer.rank === from.layer.rank &&
      !from.layer.siblings?.some((s) => s.from === from.folder && s.to === to.folder)
    ) {
      violations.push(`${edge}: ${from.folder} → ${to.folder} is no declared sibling edge`);
    }
    fileEdges.get(file)?.add(target);
    const out = folderEdges.get(from.folder) ?? new Set<string>();
    folderEdges.set(from.folder, out.add(to.folder));
  };

  for (const [file, source] of Object.entries(files)) {
    const from = folderOf(file);
    if (!from && file in ROOT_FILES) {
      for (const { specifier, kind } of references(file, source)) {
        if (kind === "computed" || /^[.#]/.test(specifier)) {
          violations.push(`${file} imports ${specifier}: a root file imports packages alone`);
        }
      }
      continue;
    }
    if (!from) {
      violations.push(`${file} is in no layer: add its folder to LAYERS`);
      continue;
    }
    fileEdges.set(file, new Set());
    for (const { specifier, kind, via } of references(file, source)) {
      const how = { import: "imports", url: "refers by URL to", worker: "starts a worker from" }[
        via
      ];
      // Node resolves a worker's path from the working directory: the repository's root.
      const base = via === "worker" ? "" : posix.dirname(file);
      if (kind === "computed") {
        // A file read by a computed name with a data extension (`${name}.java`) loads no module.
        if (via === "url" && /\.\w+`$/.test(specifier) && !/\.[cm]?[jt]sx?`$/.test(specifier)) {
          continue;
        }
        const loader = LOADERS[file];
        if (loader) {
          // A template's literal start (`../applications/${x}`) must lie inside a folder of
          // `reaches`: one that starts above them (`../../${x}`) could load any layer.
          const head = /^`(\.{1,2}\/[^`$]*)/.exec(specifier)?.[1];
          if (head !== undefined) {
            const joined = posix.join(base, head.slice(0, head.lastIndexOf("/") + 1));
            const at = joined === "./" || joined === "." ? "" : joined.replace(/\/?$/, "/");
            if (!loader.reaches.some((folder) => at.startsWith(folder))) {
              violations.push(
                `${file} loads ${specifier}, outside the folders LOADERS lets it reach (${loader.reaches.join(", ")})`,
              );
            }
          }
          for (const folder of loader.reaches) check(file, folder, "loads from");
        } else {
          violations.push(
            `${file} loads ${specifier}, a computed name the checker cannot follow: use a literal or declare it in LOADERS`,
          );
        }
        continue;
      }
      if (specifier.startsWith("node:")) continue;
      if (specifier.startsWith("#")) {
        const mapped = packageImports[specifier];
        if (!mapped) {
          violations.push(`${file} imports ${specifier}, which package.json does not map`);
        } else {
          check(file, posix.normalize(mapped), `imports ${specifier} =`);
        }
        continue;
      }
      if (!specifier.startsWith(".")) {
        if (PLATFORM.test(specifier) && !from.layer.platform) {
          violations.push(
            `${file} imports ${specifier}: only adapters and edges use the platform (${from.layer.name} may not)`,
          );
        }
        continue;
      }
      const target = posix.normalize(posix.join(base, specifier));
      // A URL to a data file or node_modules is no module reference; a folder or module is.
      if (via === "url" && !MODULE_EXTENSION.test(target) && !target.endsWith("/")) continue;
      if (target.startsWith("node_modules/") || target.startsWith("..")) {
        if (via === "url") continue;
        violations.push(`${file} imports ${target}, outside the repository's layers`);
        continue;
      }
      check(file, target, how);
    }
  }
  violations.push(...cycles(folderEdges, "folders"));
  violations.push(...cycles(fileEdges, "files"));
  return violations;
}

/** The strongly connected components of more than one node (Tarjan), each as a violation. */
function cycles(edges: Map<string, Set<string>>, what: string): string[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[] = [];
  let next = 0;
  const connect = (node: string) => {
    index.set(node, next);
    low.set(node, next++);
    stack.push(node);
    onStack.add(node);
    for (const target of edges.get(node) ?? []) {
      if (!edges.has(target)) continue;
      if (!index.has(target)) {
        connect(target);
        low.set(node, Math.min(low.get(node) as number, low.get(target) as number));
      } else if (onStack.has(target)) {
        low.set(node, Math.min(low.get(node) as number, index.get(target) as number));
      }
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop() as string;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      if (component.length > 1) found.push(`a cycle of ${what}: ${component.sort().join(", ")}`);
    }
  };
  for (const node of [...edges.keys()].sort()) if (!index.has(node)) connect(node);
  return found;
}
