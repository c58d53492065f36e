import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.CommandLineInput;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/**
 * DynamoDB Local bound to 127.0.0.1 only. Its own launcher listens on every interface and has
 * no option for the address, so this builds the same server from the same command-line
 * arguments and sets its Jetty connector's host before starting it.
 */
public final class LoopbackDynamoDbLocal {
  public static void main(String[] args) {
    try {
      CommandLineInput input = new CommandLineInput(args);
      if (!input.init()) System.exit(2);
      DynamoDBProxyServer proxy = ServerRunner.createServer(input);
      // The Jetty server is a private field; `new Server(port)` gave it one connector.
      Field field = DynamoDBProxyServer.class.getDeclaredField("server");
      field.setAccessible(true);
      Connector[] connectors = ((Server) field.get(proxy)).getConnectors();
      if (connectors.length == 0) throw new IllegalStateException("no connector to bind");
      for (Connector connector : connectors) {
        if (!(connector instanceof ServerConnector)) {
          throw new IllegalStateException("cannot bind " + connector + " to 127.0.0.1");
        }
        ((ServerConnector) connector).setHost("127.0.0.1");
      }
      // Not `start()`, which also sends a telemetry event.
      proxy.safeStart();
      proxy.join();
    } catch (Exception error) {
      error.printStackTrace();
      // Jetty's threads would keep a half-started server alive.
      System.exit(1);
    }
  }
}
