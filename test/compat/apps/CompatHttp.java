// The JVM's blocking java.net.Socket and java.net.http.HttpClient for the
// compatibility suite (test/compat/); compiled once into build/compat/java.
//   java -cp build/compat/java CompatHttp socket HOST PORT PATH   HTTP/1.0 by hand over a blocking Socket
//   java -cp build/compat/java CompatHttp httpclient URL          java.net.http.HttpClient (HTTP/1.1)
// Prints status, bytes and sha256 of the body as one JSON line.
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;

public class CompatHttp {
    static void report(int status, byte[] body) throws Exception {
        byte[] d = MessageDigest.getInstance("SHA-256").digest(body);
        StringBuilder hex = new StringBuilder();
        for (byte b : d) hex.append(String.format("%02x", b));
        System.out.println("{\"status\":" + status + ",\"bytes\":" + body.length + ",\"sha256\":\"" + hex + "\"}");
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("socket")) {
            try (Socket s = new Socket(args[1], Integer.parseInt(args[2]))) {
                s.setSoTimeout(20000);
                OutputStream out = s.getOutputStream();
                out.write(("GET " + args[3] + " HTTP/1.0\r\nHost: " + args[1] + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
                out.flush();
                InputStream in = s.getInputStream();
                ByteArrayOutputStream all = new ByteArrayOutputStream();
                byte[] buf = new byte[65536];
                for (int n; (n = in.read(buf)) > 0; ) all.write(buf, 0, n);
                byte[] data = all.toByteArray();
                int i = 0;
                while (i + 3 < data.length && !(data[i] == '\r' && data[i + 1] == '\n' && data[i + 2] == '\r' && data[i + 3] == '\n')) i++;
                String head = new String(data, 0, i, StandardCharsets.US_ASCII);
                byte[] body = java.util.Arrays.copyOfRange(data, Math.min(i + 4, data.length), data.length);
                report(Integer.parseInt(head.split(" ")[1]), body);
            }
        } else if (args[0].equals("httpclient")) {
            HttpClient c = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();
            HttpResponse<byte[]> r = c.send(HttpRequest.newBuilder(URI.create(args[1])).timeout(Duration.ofSeconds(20)).build(), HttpResponse.BodyHandlers.ofByteArray());
            report(r.statusCode(), r.body());
        } else {
            System.err.println("unknown command " + args[0]);
            System.exit(2);
        }
    }
}
