import { App } from "aws-cdk-lib";
import { AppserviceStack } from "./appservice-stack.ts";

const app = new App();
new AppserviceStack(app, "MatrixAppservice");
