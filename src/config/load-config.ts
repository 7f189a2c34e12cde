import { readFileSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { type NodeConfig, nodeConfigSchema } from './schema.js';

/** A config that failed to read or validate; `message` lists every problem with its path. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((issue) => {
      const path = issue.path.length > 0 ? issue.path.map(String).join('.') : '(top level)';
      return `  ${path}: ${issue.message}`;
    })
    .join('\n');
}

/** Validates a parsed config object and fills defaults; throws ConfigError listing every issue. */
export function resolveConfig(raw: unknown, source = 'config'): NodeConfig {
  const result = nodeConfigSchema.safeParse(raw ?? {});
  if (!result.success) throw new ConfigError(`invalid ${source}:\n${formatIssues(result.error.issues)}`);
  const cfg = result.data;
  const dataDir = resolve(cfg.dataDir);
  const memberCount = Math.max(1, cfg.cluster.members.length);
  const backupDir = resolve(cfg.backupDir ?? `${dataDir}-backups`);
  const fromData = relative(dataDir, backupDir);
  if (fromData === '' || (!fromData.startsWith('..') && !isAbsolute(fromData))) {
    throw new ConfigError(
      `invalid ${source}:\n  backupDir: ${backupDir} is inside dataDir ${dataDir}: wiping the data dir (the fix for a broken disk or a stale node) would delete the backups; put them beside it (the default is <dataDir>-backups)`,
    );
  }
  return {
    ...cfg,
    dataDir,
    backupDir,
    cluster: { ...cfg.cluster, replicationFactor: cfg.cluster.replicationFactor ?? Math.min(3, memberCount) },
  };
}

/** Reads and validates a YAML config file. */
export function loadConfigFile(path: string): NodeConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config ${path} is not valid YAML: ${(err as Error).message}`);
  }
  return resolveConfig(raw, `config ${path}`);
}
