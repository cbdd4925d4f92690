/**
 * What every command shares about its command line: exit codes, argument parsing, the version, and
 * the one line an operator reads when a command cannot run. A mistyped flag is the operator's input,
 * like a bad request body: parseArgs's errors become a UsageError (INVALID_REQUEST) where they enter,
 * and end the command with exit code 2 and one line, never a stack trace.
 */
import { readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import { ApiRefusedError } from './api-client.js';

/** 0 done (or accepted without --wait), 1 failed or cancelled, 2 usage, 3 the API refused. */
export const ExitCode = { Ok: 0, Failed: 1, Usage: 2, Refused: 3 } as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A command line slotfleet cannot run: a flag unknown, a value missing or malformed. */
export class UsageError extends SlotfleetError {
  constructor(message: string, options?: ErrorOptions) {
    super(ErrorCode.InvalidRequest, message, options);
    this.name = 'UsageError';
  }
}

/** parseArgs, with its errors (unknown flag, missing value, stray argument) as UsageError. */
export function parseCommandLine<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) {
      throw new UsageError((error as Error).message, { cause: error });
    }
    throw error;
  }
}

/** A whole number above 0 given to `flag`, or a UsageError naming the flag. */
export function positiveInteger(text: string | undefined, flag: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1)
    throw new UsageError(`${flag} must be a whole number above 0`);
  return value;
}

/**
 * What to print and exit with when `command` threw. Usage mistakes and every SlotfleetError are one
 * line; anything else is a bug in slotfleet, and its stack is what a bug report needs.
 */
export function failureReport(error: unknown, command: string): { exitCode: ExitCode; text: string } {
  if (error instanceof UsageError) {
    return {
      exitCode: ExitCode.Usage,
      text: `slotfleet ${command}: ${oneLine(error.message)} (see slotfleet ${command} --help)\n`,
    };
  }
  if (error instanceof ApiRefusedError) {
    return { exitCode: ExitCode.Refused, text: `slotfleet: ${oneLine(error.message)}\n` };
  }
  if (error instanceof SlotfleetError) {
    return { exitCode: ExitCode.Failed, text: `slotfleet: ${error.code}: ${oneLine(error.message)}\n` };
  }
  return { exitCode: ExitCode.Failed, text: `slotfleet: ${String((error as Error)?.stack ?? error)}\n` };
}

/** The version in package.json, which sits two folders up from src/cli and from dist/cli alike. */
export function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return String(manifest.version);
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
