import {
  ArnFormat,
  CfnResource,
  CustomResource,
  Duration,
  RemovalPolicy,
  Stack,
} from "aws-cdk-lib";
import { type IGrantable, PolicyStatement } from "aws-cdk-lib/aws-iam";
import type { RetentionDays } from "aws-cdk-lib/aws-logs";
import { type ISecret, Secret } from "aws-cdk-lib/aws-secretsmanager";
import { Construct } from "constructs";
import { TOKEN_GENERATION } from "../functions/handlers/tokens-secret.ts";
import type { TokenName } from "../functions/wiring/env.ts";
import type { ApplicationChoice } from "./application.ts";
import { AppserviceFunction } from "./appservice-function.ts";
import { TOKENS_SECRET_ENTRY } from "./bundling.ts";

/** A secret for each token: a function is granted only those it uses. */
export type TokenSecrets = Record<TokenName, ISecret>;

export interface AppserviceSecretsProps {
  /** Existing secrets, one a token; generated when absent. */
  tokenSecrets?: TokenSecrets;
  /** The application: a secret shared with its remote service when its manifest declares one. */
  application: ApplicationChoice;
  /** Devices (the bot's, each user's) whose crypto state is encrypted under a secret of its own. */
  encryptedRooms: boolean;
  logRetention: RetentionDays;
  tracing: boolean;
}

/**
 * The appservice's secrets: a secret a token (as_token, hs_token, the operator console's
 * admin_token), given or generated at deploy, and the application's secret shared with its remote
 * service (the relay's), when its manifest declares `remoteSecret`. All retained: the homeserver's
 * registration file and the remote service hold their values.
 *
 * Made in the appservice's own scope, not a construct of its own: see `MatrixAppservice`.
 */
export class AppserviceSecrets {
  /** A secret for each token, its value the token itself. */
  readonly tokenSecrets: TokenSecrets;
  /**
   * The secret shared with the application's remote service (a plain string), when its manifest
   * declares `remoteSecret`.
   */
  readonly remoteSecret?: Secret;
  /**
   * The secret the bot device's crypto state is encrypted under (docs/encryption.md), when the
   * appservice reads encrypted rooms. Retained: a new one could not open the state.
   */
  readonly cryptoStoreSecret?: Secret;
  /** Its construct id (`RelaySecret`), which names its output too. */
  readonly remoteSecretId: string;
  /** Where the stack generates the tokens: the deploy-time function that carries old ones over. */
  readonly tokensGenerator?: AppserviceFunction;
  private readonly tokensCarried?: CustomResource;

  constructor(
    private readonly scope: Construct,
    { tokenSecrets, application, encryptedRooms, logRetention, tracing }: AppserviceSecretsProps,
  ) {
    if (tokenSecrets) {
      this.tokenSecrets = tokenSecrets;
    } else {
      const generated = this.generateTokenSecrets({ logRetention, tracing });
      this.tokenSecrets = generated.secrets;
      this.tokensGenerator = generated.generator;
      this.tokensCarried = generated.carried;
    }

    // A secret of its own, made at deploy, read by the two functions that use it: the app
    // function checks the remote service's requests, the outbox signs the deliveries to it.
    // Retained, as the tokens: the remote service was given it.
    // Its id from the application's name: the relay's stays `RelaySecret`, the logical ID it was
    // deployed under (another would replace the secret the remote service holds).
    this.remoteSecretId = `${application.name.replace(/(^|-)(\w)/g, (_, _dash, c: string) => c.toUpperCase())}Secret`;
    this.remoteSecret = application.module.manifest.remoteSecret
      ? new Secret(scope, this.remoteSecretId, {
          // A description change is an in-place update: the construct id above is what keeps it.
          description: `The ${application.name} application's secret shared with its remote service: requests signed with it, both ways`,
          generateSecretString: { passwordLength: 64, excludePunctuation: true },
          removalPolicy: RemovalPolicy.RETAIN,
        })
      : undefined;
    this.cryptoStoreSecret = encryptedRooms
      ? new Secret(scope, "CryptoStoreSecret", {
          description: "The key of the bot device's crypto state (encrypted rooms)",
          generateSecretString: { passwordLength: 64, excludePunctuation: true },
          removalPolicy: RemovalPolicy.RETAIN,
        })
      : undefined;
  }

  /** Keeps `fn` from running (from being created) before the tokens exist. */
  runAfterTokens(fn: Construct) {
    if (this.tokensCarried) fn.node.addDependency(this.tokensCarried);
  }

  /** Lets `fn` read the token `token`'s secret, and that alone. */
  grantToken(fn: IGrantable, token: TokenName) {
    grantSecretRead(fn, this.tokenSecrets[token]);
  }

  /** Lets `fn` read the remote service's secret, when there is one. */
  grantRemoteSecret(fn: IGrantable) {
    if (this.remoteSecret) grantSecretRead(fn, this.remoteSecret);
  }

  /** Lets `fn` (one that decrypts or encrypts) read the crypto state's secret, when there is one. */
  grantCryptoStoreSecret(fn: IGrantable) {
    if (this.cryptoStoreSecret) grantSecretRead(fn, this.cryptoStoreSecret);
  }

  /**
   * A secret a token, each generated whole by CloudFormation (64 random characters), so a change
   * of the generation settings regenerates a whole token, never a part of one. `AsToken` and
   * `HsToken` have the logical IDs and properties of the stacks before the tokens shared a secret:
   * such a stack keeps both secrets and their values. A stack of the one-secret layout gets
   * its tokens carried over at deploy time (`carryOverTokens`). Retained: a replaced secret (a new
   * logical ID) would hand out tokens the homeserver does not know; the old one stays, to be
   * imported (`tokenSecrets`) or deleted by hand.
   */
  private generateTokenSecrets(options: { logRetention: RetentionDays; tracing: boolean }) {
    const scope = this.scope;
    const generate = (id: string, description: string) =>
      new Secret(scope, id, {
        description,
        generateSecretString: {
          passwordLength: TOKEN_GENERATION.PasswordLength,
          excludePunctuation: TOKEN_GENERATION.ExcludePunctuation,
        },
        removalPolicy: RemovalPolicy.RETAIN,
      });
    const secrets: TokenSecrets = {
      // The descriptions the two-secret layout gave them: an unchanged resource.
      asToken: generate("AsToken", "The appservice's as_token (registration file)"),
      hsToken: generate("HsToken", "The appservice's hs_token (registration file)"),
      adminToken: generate("AdminToken", "The appservice's operator console token (admin_token)"),
    };
    const legacyLogicalId = this.legacyTokensSecretLogicalId();
    const generator = new AppserviceFunction(scope, "tokens", {
      entry: TOKENS_SECRET_ENTRY,
      timeout: Duration.seconds(30),
      environment: {},
      ...options,
    });
    const stack = Stack.of(scope);
    generator.addToRolePolicy(
      new PolicyStatement({
        actions: ["cloudformation:DescribeStackResource"],
        resources: [
          stack.formatArn({
            service: "cloudformation",
            resource: "stack",
            resourceName: `${stack.stackName}/*`,
          }),
        ],
      }),
    );
    generator.addToRolePolicy(
      new PolicyStatement({
        actions: ["secretsmanager:GetSecretValue"],
        // CloudFormation names a secret after its logical ID, then Secrets Manager adds a suffix.
        resources: [
          stack.formatArn({
            service: "secretsmanager",
            resource: "secret",
            resourceName: `${legacyLogicalId}-*`,
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );
    generator.addToRolePolicy(
      new PolicyStatement({
        actions: ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
        resources: Object.values(secrets).map((secret) => secret.secretArn),
      }),
    );
    const carried = new CustomResource(scope, "TokensCarried", {
      serviceToken: generator.functionArn,
      resourceType: "Custom::AppserviceTokensCarried",
      properties: {
        LegacyLogicalId: legacyLogicalId,
        AsTokenSecretId: secrets.asToken.secretArn,
        HsTokenSecretId: secrets.hsToken.secretArn,
        AdminTokenSecretId: secrets.adminToken.secretArn,
      },
    });
    return { secrets, generator, carried };
  }

  /**
   * The logical ID the one-secret layout's `Tokens` secret had (as CloudFormation knows it):
   * made the way CDK makes it, from a placeholder at its path (`<appservice>/Tokens`), then removed.
   */
  private legacyTokensSecretLogicalId(): string {
    const placeholder = new Construct(this.scope, "Tokens");
    const id = Stack.of(this.scope).getLogicalId(
      new CfnResource(placeholder, "Resource", { type: "AWS::SecretsManager::Secret" }),
    );
    this.scope.node.tryRemoveChild("Tokens");
    return id;
  }
}

/**
 * Lets `fn` read `secret` (its full ARN, or any of the suffixes Secrets Manager adds), and decrypt
 * it with its key when it has one of its own.
 */
export function grantSecretRead(fn: IGrantable, secret: ISecret) {
  fn.grantPrincipal.addToPrincipalPolicy(
    new PolicyStatement({
      actions: ["secretsmanager:GetSecretValue"],
      resources: [secret.secretFullArn ?? `${secret.secretArn}-??????`],
    }),
  );
  secret.encryptionKey?.grantDecrypt(fn);
}
