import { Stack, type StackProps } from "aws-cdk-lib";
import type { Construct } from "constructs";
import { MatrixAppservice, type MatrixAppserviceProps } from "./matrix-appservice.ts";

/** The appservice alone in a stack: what `cdk deploy` deploys. */
export class AppserviceStack extends Stack {
  readonly appservice: MatrixAppservice;

  constructor(
    scope: Construct,
    id: string,
    props: StackProps & { appservice: MatrixAppserviceProps },
  ) {
    super(scope, id, props);
    this.appservice = new MatrixAppservice(this, "Appservice", props.appservice);
  }
}
