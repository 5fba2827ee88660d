import { readFile } from 'node:fs/promises';
import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { ConfigError, type ConfigIssue } from '../errors.ts';

/** A parsed YAML/JSON file that can say on which line a field stands. */
export interface SourceDocument {
  file: string;
  value: unknown;
  /** 1-based line of the node at `path` (a JSON pointer like `/paths/~1pets/get`), or the nearest parent's. */
  lineOf(path: string): number | undefined;
}

/** One segment of a JSON pointer (RFC 6901): `~` as `~0`, `/` as `~1`. */
export function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** Split a JSON pointer (`/a/b~1c`) into its segments. */
export function pointerSegments(pointer: string): string[] {
  if (pointer === '' || pointer === '/') return [];
  return pointer
    .replace(/^\//, '')
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/**
 * Parse YAML (JSON is YAML) keeping positions. Syntax errors become a ConfigError naming the
 * file and line. Duplicate keys are errors, as they almost always are typos.
 */
export function parseSource(text: string, file: string): SourceDocument {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({
        file,
        line: e.linePos?.[0]?.line ?? lineCounter.linePos(e.pos[0]).line,
        path: '',
        message: e.message.split('\n')[0] ?? e.message,
      })),
    );
  }
  const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
  return {
    file,
    value,
    lineOf(path: string): number | undefined {
      let node: unknown = doc.contents;
      let line: number | undefined;
      const at = (n: unknown) => {
        const range = (n as YamlNode | null)?.range;
        if (range) line = lineCounter.linePos(range[0]).line;
      };
      at(node);
      for (const seg of pointerSegments(path)) {
        if (isMap(node)) {
          const pair = node.items.find((p) => String((p.key as { value?: unknown })?.value ?? p.key) === seg);
          if (!pair) break;
          at(pair.key);
          node = pair.value;
        } else if (isSeq(node)) {
          node = node.items[Number(seg)];
          at(node);
        } else break;
      }
      return line;
    },
  };
}

/** Read and parse a file; a missing or unreadable file is a ConfigError too. */
export async function readSource(file: string): Promise<SourceDocument> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (cause) {
    const issue: ConfigIssue = { file, path: '', message: `cannot read file: ${(cause as Error).message}` };
    throw new ConfigError([issue], { cause });
  }
  return parseSource(text, file);
}
